"""deploykit serve's gRPC front before a stand-in Triton (a gRPC server answering each streamed request with
its id): what the drain counts as cut off."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("grpc")
pytest.importorskip("tritonclient.grpc")
import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from deploykit.serve.front import FrontLimits
from deploykit.serve.grpc_front import GrpcFront
from tests.serve.test_http_errors import _free_port


def _echo(requests: Iterator[bytes], _context: object) -> Iterator[bytes]:
    for raw in requests:
        request = service_pb2.ModelInferRequest.FromString(raw)
        yield service_pb2.ModelStreamInferResponse(
            infer_response=service_pb2.ModelInferResponse(id=request.id)).SerializeToString()


class _Triton:
    def service(self, details: object) -> object:
        return grpc.stream_stream_rpc_method_handler(_echo)


def _requests(count: int, every_s: float) -> Iterator[service_pb2.ModelInferRequest]:
    for i in range(count):
        yield service_pb2.ModelInferRequest(model_name="seg", id=str(i))
        time.sleep(every_s)


def _started(triton_handler: object, host: str = "127.0.0.1") -> tuple[grpc.Server, GrpcFront, int]:
    """A stand-in Triton answering with `triton_handler`, and a GrpcFront before it listening on host:port."""
    triton = grpc.server(ThreadPoolExecutor(4), handlers=[triton_handler])
    upstream = triton.add_insecure_port("127.0.0.1:0")
    triton.start()
    front = GrpcFront(f"127.0.0.1:{upstream}", FrontLimits(max_elements=2**18, max_body_bytes=2**20), 1)
    port = _free_port()
    front.start(host, port)
    return triton, front, port


@pytest.mark.parametrize(("count", "cut"), [(3, False), (200, True)])
def test_a_stream_the_drain_ends_is_counted_as_cut_off(count: int, cut: bool) -> None:
    """A stream still open when the drain ran out was not counted (serve exited 0 after cutting it off) once the
    front answered streams from a queue: its handler ended at once on the cancel."""
    triton, front, port = _started(_Triton())
    answers: list[str] = []

    def stream() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                for answer in service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
                        _requests(count, 0.05)):
                    answers.append(answer.infer_response.id)
            except grpc.RpcError as exc:
                answers.append(str(exc.code()))

    client = threading.Thread(target=stream)
    client.start()
    time.sleep(0.5)
    try:
        drained = front.stop()
    finally:
        triton.stop(None)
        client.join(10)
    assert drained is not cut, answers
    assert answers[:3] == ["0", "1", "2"]


class _StillActive:
    """A call's context as grpc showed it to a stream whose request iterator saw the cancel first."""

    def is_active(self) -> bool:
        return True


@pytest.mark.parametrize(("ended", "cut"), [("before the drain's end", 0), ("after the drain's end", 1)])
def test_a_call_that_outlives_the_drain_is_cut_even_while_its_context_reads_active(ended: str, cut: int) -> None:
    """Under load, a stream's handler could end after the drain ran out while grpc still called its context
    active: serve exited 0 after cutting it off (seen once in a combined run)."""
    front = GrpcFront("127.0.0.1:1", FrontLimits(max_elements=1, max_body_bytes=1), 1)
    front._closing = True
    front._drain_end = time.monotonic() + (3600 if ended.startswith("before") else -1)
    with front._counted(_StillActive()):  # type: ignore[arg-type]
        pass
    assert front._cut == cut


class _Repository:
    """A stand-in Triton answering RepositoryIndex with one model."""

    def service(self, details: object) -> object:
        return grpc.unary_unary_rpc_method_handler(lambda _raw, _context: service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(name="seg")]).SerializeToString())


def test_a_client_on_ipv6_loopback_is_served_the_administration() -> None:
    """grpc names an IPv6 peer %-escaped ("ipv6:%5B::1%5D:5000"): the front read no address in it and refused a
    client on [::1] with PERMISSION_DENIED, telling it to call from the server's own machine."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    triton, front, port = _started(_Repository(), host="::1")
    try:
        with grpc.insecure_channel(f"[::1]:{port}") as channel:
            index = service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
                service_pb2.RepositoryIndexRequest(), timeout=10)
    finally:
        front.stop()
        triton.stop(None)
    assert [model.name for model in index.models] == ["seg"]


class _Wordy:
    """A stand-in Triton refusing every call with an error quoting a 100 kB input name, as Triton does."""

    def service(self, details: object) -> object:
        def refuse(_raw: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unexpected inference input '" + "n" * 100_000 + "'")
            return b""
        return grpc.unary_unary_rpc_method_handler(refuse)


@contextlib.contextmanager
def _front_before(triton_handler: object) -> Iterator[int]:
    """The port of a GrpcFront before a stand-in Triton."""
    triton, front, port = _started(triton_handler)
    try:
        yield port
    finally:
        front.stop()
        triton.stop(None)


def test_a_long_triton_error_reaches_the_client_clipped() -> None:
    """A client got RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" instead of Triton's error."""
    with _front_before(_Wordy()) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel, \
            pytest.raises(grpc.RpcError) as refused:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(service_pb2.ModelInferRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert str(refused.value.details()).startswith("unexpected inference input 'nnn")
    assert len(str(refused.value.details())) < 8192


def _many_dimensions(request_id: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="seg", id=request_id)
    request.inputs.add(name="input", datatype="FP32", shape=[2] * 20_000)
    return request


def test_a_shape_of_many_dimensions_is_refused_in_words_and_a_stream_goes_on() -> None:
    """20000 dimensions of 2: the front's message wrote their product, an integer Python will not write (more than
    4300 digits): ModelInfer got UNKNOWN "Exception calling application", and a stream ended there."""
    with _front_before(_Triton()) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_many_dimensions("0"), timeout=10)
        requests = [service_pb2.ModelInferRequest(model_name="seg", id="0"), _many_dimensions("1"),
                    service_pb2.ModelInferRequest(model_name="seg", id="2")]
        answers = list(stub.ModelStreamInfer(iter(requests), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert "input too large" in str(refused.value.details()) and "(20000 dimensions)" in str(refused.value.details())
    assert sorted((a.infer_response.id, "too large" in a.error_message) for a in answers) == [
        ("0", False), ("1", True), ("2", False)]


def _large(request_id: str, size: int) -> service_pb2.ModelInferRequest:
    """A request of about `size` bytes whose shape the front takes (the bytes are the image model's)."""
    request = service_pb2.ModelInferRequest(model_name="seg_image", id=request_id)
    request.inputs.add(name="image", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(b"x" * size)
    return request


@pytest.mark.parametrize("times", [1.5, 40])
def test_a_message_above_the_limit_is_refused_naming_the_option_and_a_stream_goes_on(times: float) -> None:
    """gRPC refused a message above the front's limit itself, before the front's handler ran, with
    RESOURCE_EXHAUSTED "Received message larger than max (41942817 vs. 9437184)", which names no option of serve
    (HTTP's 413 names --max-input-mb); and in a stream the refusal ended the stream. 40 times the limit: gRPC reads
    256 MB at least before the front refuses in its words."""
    size = int(times * 2**20)  # the front's limit is 2**20 (_started)
    options = [("grpc.max_send_message_length", -1)]
    with _front_before(_Triton()) as port, grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_large("0", size), timeout=10)
        requests = [service_pb2.ModelInferRequest(model_name="seg", id="0"), _large("1", size),
                    service_pb2.ModelInferRequest(model_name="seg", id="2")]
        answers = list(stub.ModelStreamInfer(iter(requests), timeout=10))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
    assert "larger than this server's 1048576 bytes" in str(refused.value.details())
    assert "--max-input-mb" in str(refused.value.details())
    assert sorted((a.infer_response.id, "--max-input-mb" in a.error_message) for a in answers) == [
        ("0", False), ("1", True), ("2", False)]


@pytest.mark.parametrize("size", [9000, 100_000])
def test_metadata_above_the_limit_is_refused_in_words_naming_it(size: int) -> None:
    """gRPC refused it before the front's handler ran: RESOURCE_EXHAUSTED "received metadata size exceeds soft
    limit (9575 vs. 8192); :path:79B ..." (hard limit beyond 16 kB), naming no limit of serve's, nor what to send."""
    with _front_before(_Triton()) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(service_pb2.ModelInferRequest(model_name="seg"), metadata=[("x-big", "a" * size)],
                            timeout=10)
        with pytest.raises(grpc.RpcError) as ended:
            list(stub.ModelStreamInfer(iter([service_pb2.ModelInferRequest(model_name="seg")]),
                                       metadata=[("x-big", "a" * size)], timeout=10))
        stub.ModelInfer(service_pb2.ModelInferRequest(model_name="seg"), metadata=[("x-small", "a" * 5000)],
                        timeout=10)  # within the limit: passed on
    for error in (refused.value, ended.value):
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "the call's metadata is" in str(error.details())
        assert "more than this server's 7168; send less" in str(error.details())
