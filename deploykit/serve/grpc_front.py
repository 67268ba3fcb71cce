"""deploykit serve's gRPC front: what `--grpc-port` clients reach, passing each call to Triton's gRPC endpoint
on a private loopback port as bytes, after checking the shapes of inference requests.

Triton's gRPC endpoint has the HTTP one's hole (deploykit/serve/front.py): a ModelInfer input whose shape's
byte size wraps to 0, sent with 0 bytes, aborts the model's Python stub, and every later request to that
model fails while the server reports it ready. Inference requests (ModelInfer, and each message of
ModelStreamInfer) are parsed and such shapes refused with INVALID_ARGUMENT (in a stream, an in-stream error
answer, as Triton gives for a request it refuses, and the stream goes on); Triton's administration (ADMIN_RPCS)
is refused with PERMISSION_DENIED to clients on other machines (front.why_forbidden); every other call passes
unread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import unquote

from deploykit.serve.engine import address
from deploykit.serve.front import ADMIN_RPCS, FrontLimits, why_forbidden, why_shape_refused

if TYPE_CHECKING:  # grpcio and tritonclient come with the serve extra: imported where the front runs
    import grpc

_SERVICE = "/inference.GRPCInferenceService/"
_INFER, _STREAM = _SERVICE + "ModelInfer", _SERVICE + "ModelStreamInfer"
_LARGEST_MESSAGE = 2**31 - 1  # gRPC's own limit
# gRPC refuses a message above its receive limit before any handler runs, in its own words ("Received message
# larger than max (41942817 vs. 9437184)", and a stream ends), which name no option of serve. gRPC reads up to
# _READ_BEYOND times the front's limit (_READ_AT_LEAST at least: a 40 MB tensor sent to --max-input-mb 1), and the
# front refuses what is above its own in words naming --max-input-mb (in a stream, an in-stream error, and the
# stream goes on). Beyond that gRPC's words remain: to answer in its own the front would have to hold the whole
# message, which gRPC refuses on its length, unread.
_READ_BEYOND, _READ_AT_LEAST = 4, 2**28
# An error's words travel in a header, which a gRPC client reads up to 8 kB of (16 kB at most): Triton quotes the
# request in its errors (a 100 kB input name, a shape of 5000 dimensions), and the client got RESOURCE_EXHAUSTED
# "received metadata size exceeds hard limit" instead of the error. The front reads Triton's whole error and
# passes on its beginning.
_LARGEST_ERROR_HEADER = 2**24
_ERROR_CHARS = 2000
# A call's metadata (its headers) as gRPC counts it: each entry's key, value and 32. gRPC refused more than 8 kB
# before the front's handler ran, with "received metadata size exceeds soft limit (9575 vs. 8192); :path:79B ..."
# (at random up to 16 kB, then "hard limit"), naming no limit of serve's nor what to send. The front reads up to
# 1 MB (HTTP's head: 128 headers of 8 kB) and refuses more than Triton's own 8 kB takes, less what the front's call to
# Triton adds (its path, authority and the like).
_LARGEST_METADATA, _METADATA_BYTES = 2**20, 7 * 2**10


def why_infer_refused(raw: bytes, max_elements: int) -> str | None:
    """Why this serialized ModelInferRequest must not reach Triton, or None."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest()
    try:
        request.ParseFromString(raw)
    except Exception as exc:  # protobuf's DecodeError, whichever implementation
        return f"the request is not a ModelInferRequest ({str(exc)[:200]})"
    for tensor in request.inputs:
        reason = why_shape_refused(tensor.name, list(tensor.shape), max_elements)
        if reason:
            return reason
    return None


class GrpcFront:
    """The gRPC front on (host, port), passing calls to Triton's gRPC endpoint at `upstream` (host:port)."""

    def __init__(self, upstream: str, limits: FrontLimits, drain_s: float) -> None:
        import grpc

        self.limits, self.max_elements, self.drain_s = limits, limits.max_elements, drain_s
        largest = min(max(_READ_BEYOND * limits.max_body_bytes, _READ_AT_LEAST), _LARGEST_MESSAGE)
        self._channel = grpc.insecure_channel(upstream, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
            ("grpc.max_metadata_size", _LARGEST_ERROR_HEADER),
            ("grpc.absolute_max_metadata_size", _LARGEST_ERROR_HEADER)])
        self._server = grpc.server(ThreadPoolExecutor(32, thread_name_prefix="deploykit-serve-grpc"),
                                   handlers=[_Passing(self)],
                                   options=[("grpc.max_receive_message_length", largest),
                                            ("grpc.max_send_message_length", -1),
                                            ("grpc.max_metadata_size", _LARGEST_METADATA),
                                            ("grpc.absolute_max_metadata_size", _LARGEST_METADATA)])
        self._active = 0
        self._cut = 0  # calls the end of the drain cancelled
        self._closing = False
        self._drain_end = float("inf")  # time.monotonic() when the drain runs out, once stopping
        self._lock = threading.Lock()

    def start(self, host: str, port: int) -> None:
        """Listen on host:port (an OSError when it cannot)."""
        try:
            bound = self._server.add_insecure_port(address(host, port))
        except RuntimeError as exc:  # grpcio raises where older versions returned 0
            raise OSError(f"cannot bind {address(host, port)}") from exc
        if not bound:
            raise OSError(f"cannot bind {address(host, port)}")
        self._server.start()

    def stop(self) -> bool:
        """Stop taking calls, give in-flight ones the drain, close; whether none was cut off."""
        self._drain_end = time.monotonic() + self.drain_s
        self._closing = True
        self._server.stop(grace=self.drain_s).wait()
        self._channel.close()
        return self._active == 0 and self._cut == 0

    def too_large(self, raw: bytes) -> str:
        return self.limits.too_large(f"the message ({len(raw)} bytes)")

    @contextlib.contextmanager
    def _counted(self, context: grpc.ServicerContext) -> Iterator[None]:
        """One call in flight; Triton's errors are passed on as it gave them."""
        import grpc

        with self._lock:
            self._active += 1
        try:
            yield
        except grpc.RpcError as exc:
            context.abort(exc.code(), clipped(exc.details() or ""))
        finally:
            with self._lock:
                self._active -= 1
                # Ended by the drain's end, not done: a stream it cancelled ended here at once, not counted; and
                # one whose request iterator saw the cancel first could end while its context still read active
                self._cut += self._closing and (not context.is_active() or time.monotonic() >= self._drain_end)

    def unary(self, method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        import grpc

        upstream = self._channel.unary_unary(method)

        def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
            name = method.removeprefix(_SERVICE)
            if name in ADMIN_RPCS and (forbidden := why_forbidden(name, peer_address(context.peer()))):
                context.abort(grpc.StatusCode.PERMISSION_DENIED, forbidden)
            if (metadata := why_metadata_refused(context)) or len(raw) > self.limits.max_body_bytes:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, metadata or self.too_large(raw))
            reason = why_infer_refused(raw, self.max_elements) if method == _INFER else None
            if reason:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
            remaining = context.time_remaining()  # about 2**63 when the client set no deadline
            with self._counted(context):
                return bytes(upstream(raw, metadata=_passed(context), timeout=remaining if remaining < 1e9 else None))
        return handle

    def stream(self, method: str) -> Callable[[Iterator[bytes], grpc.ServicerContext], Iterator[bytes]]:
        import grpc

        upstream = self._channel.stream_stream(method)

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            """Triton's answers and, for each refused message, an in-stream error as Triton gives one: the stream
            goes on. It ended at the first refused message, and the messages after it got no answer."""
            if metadata := why_metadata_refused(context):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, metadata)
            answers: queue.Queue[bytes | grpc.RpcError | None] = queue.Queue()  # None: Triton's stream ended

            def checked() -> Iterator[bytes]:
                for raw in requests:
                    if len(raw) > self.limits.max_body_bytes:
                        reason: str | None = self.too_large(raw)
                    else:
                        reason = why_infer_refused(raw, self.max_elements) if method == _STREAM else None
                    if reason:
                        answers.put(stream_error(raw, reason))
                    else:
                        yield raw

            call = upstream(checked(), metadata=_passed(context))
            context.add_callback(call.cancel)  # the client went away: so does Triton's stream

            def pump() -> None:
                try:
                    for answer in call:
                        answers.put(answer)
                    answers.put(None)
                except grpc.RpcError as exc:
                    answers.put(exc)

            with self._counted(context):
                threading.Thread(target=pump, name="deploykit-serve-grpc-stream", daemon=True).start()
                while (item := answers.get()) is not None:
                    if isinstance(item, grpc.RpcError):
                        raise item
                    yield item
        return handle


def clipped(error: str) -> str:
    """An error's words as a client can read them (_ERROR_CHARS)."""
    return error if len(error) <= _ERROR_CHARS else error[:_ERROR_CHARS] + f"... ({len(error)} characters)"


def stream_error(raw: bytes, reason: str) -> bytes:
    """The ModelStreamInferResponse carrying `reason` for the request `raw` (its id and model, when it parses)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest()
    with contextlib.suppress(Exception):  # an unparsable request's answer names no id
        request.ParseFromString(raw)
    answer = service_pb2.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                            id=request.id)
    return bytes(service_pb2.ModelStreamInferResponse(error_message=reason, infer_response=answer)
                 .SerializeToString())


def peer_address(peer: str) -> str | None:
    """The IP address in a gRPC peer name ("ipv4:127.0.0.1:5000", "ipv6:%5B::1%5D:5000"); None for another kind.
    grpc writes the name as a URI, %-escaped: read unescaped, "%5B::1%5D" was no address and a client on [::1] was
    refused the administration it is served."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return None


def why_metadata_refused(context: grpc.ServicerContext) -> str | None:
    """Why the call's metadata must not be passed on to Triton (more than _METADATA_BYTES), or None."""
    size = sum(len(m.key) + len(m.value) + 32 for m in context.invocation_metadata())
    if size <= _METADATA_BYTES:
        return None
    return (f"the call's metadata is {size} bytes (each entry's key and value, and 32), more than this server's "
            f"{_METADATA_BYTES}; send less")


def _passed(context: grpc.ServicerContext) -> list[tuple[str, str | bytes]]:
    """The client's metadata, without what each gRPC connection sets for itself."""
    return [(m.key, m.value) for m in context.invocation_metadata()
            if m.key != "user-agent" and not m.key.startswith("grpc-")]


class _Passing:
    """A grpc.GenericRpcHandler (grpc asks only for its `service` method)."""

    def __init__(self, front: GrpcFront) -> None:
        self.front = front

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        import grpc

        method = str(handler_call_details.method)
        if method == _STREAM:
            return grpc.stream_stream_rpc_method_handler(self.front.stream(method))
        return grpc.unary_unary_rpc_method_handler(self.front.unary(method))
