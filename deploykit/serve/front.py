"""deploykit serve's HTTP front: the address clients reach, passing each request to the Triton server on a
private loopback port once it is known to be safe for Triton's own HTTP front end to read.

Why a front: the bundled Triton (2.51) reads a request before any model runs, and three kinds of small
requests take it down: a JSON input whose `shape` promises more values than memory holds (it allocates the
tensor first and aborts: a 200-byte request ends the server); a `shape` whose byte size overflows 64 bits to
0, sent with 0 bytes (the model's Python stub aborts reading it and every later request to that model gets
500 while /v2/health/ready still says 200); a gzip-compressed body that inflates past memory. It also
answers malformed JSON with 500. The front answers all of these with 400 (413 for a body above the limit)
and a message naming what was wrong; Triton's administration (repository, shared memory, logging, trace) gets
403 from clients on other machines (`why_forbidden`); everything else (health, metadata, statistics, binary
tensors, the answers) passes through unchanged. aiohttp decompresses bodies within the size limit.

The front reads the JSON as Triton's parser (RapidJSON, through TritonJson) does, or refuses it: where Python's
json and RapidJSON differ, a request the front checked is not the one Triton runs. Duplicate keys were the worst
case (Triton takes the first `shape`, Python the last: a 170-byte request with two shapes aborted the server
past the front); numbers beyond a double, lone UTF-16 surrogates and UTF-16/32 bodies, which Python reads and
RapidJSON does not, got 500. So did every field Triton reads with a JSON type it did not get (`id` a number,
`priority` negative, a boolean in FP32 `data`, a fraction in INT64 `data`): the front refuses those with 400.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deploykit.serve.http_errors import json_error, json_error_runner, upstream_error

if TYPE_CHECKING:  # aiohttp comes with the serve extra (tritonclient[http]): imported where the front runs
    from aiohttp import ClientSession, web

HEADER_LENGTH = "Inference-Header-Content-Length"
_INFER = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer")
# Hop-by-hop and framing headers: each side of the front sets its own.
_NOT_PASSED = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
               "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class _Kind:
    """A JSON type Triton reads a field as (TritonJson's AsBool / AsUInt / AsInt / AsDouble / AsString)."""

    words: str
    accepts: Callable[[Any], bool]


# Python's json reads a literal with a fraction or an exponent as float, an integer literal as int (RapidJSON reads
# one beyond 64 bits as a double: the kinds of whole numbers check the range); bool is an int, hence `type(v)`.
_BOOL = _Kind("true or false", lambda v: type(v) is bool)
_UINT = _Kind("a whole number 0..2**64-1", lambda v: type(v) is int and 0 <= v < 2**64)
_INT = _Kind("whole numbers -2**63..2**63-1", lambda v: type(v) is int and -(2**63) <= v < 2**63)
_NUMBER = _Kind("numbers", lambda v: type(v) in (int, float))
_STRING = _Kind("a string", lambda v: type(v) is str)
_UINT_OR_STRING = _Kind("a whole number 0..2**64-1 or a string", lambda v: _UINT.accepts(v) or _STRING.accepts(v))
_DATA_KINDS = {"BOOL": _Kind("true or false values", _BOOL.accepts), "BYTES": _Kind("strings", _STRING.accepts),
               **{f"UINT{bits}": _Kind("whole numbers 0..2**64-1", _UINT.accepts) for bits in (8, 16, 32, 64)},
               **{f"INT{bits}": _INT for bits in (8, 16, 32, 64)}}
_SHARED_MEMORY = {"shared_memory_region": _STRING, "shared_memory_byte_size": _UINT, "shared_memory_offset": _UINT}
# The parameters Triton's HTTP front end reads, with their types (http_server.cc: EVBufferToInput,
# CheckBinaryInputData, CheckSharedMemoryData, CheckClassificationOutput, CheckBinaryOutputData).
_REQUEST_PARAMETERS = {"sequence_id": _UINT_OR_STRING, "sequence_start": _BOOL, "sequence_end": _BOOL,
                       "priority": _UINT, "timeout": _UINT, "binary_data_output": _BOOL}
_INPUT_PARAMETERS = {"binary_data_size": _UINT, **_SHARED_MEMORY}
_OUTPUT_PARAMETERS = {"binary_data": _BOOL, "classification": _UINT, **_SHARED_MEMORY}
_LAST_GRACE_S = 0.5  # after the drain, what aiohttp's shutdown gives a request before cancelling it
# While the front stops, a body from which no byte came this long (counted from the stop at the earliest) gets 408:
# a client that paused mid-body held the whole drain (idle_body_s is a minute) and serve exited 1 as if requests
# had been cut off.
_DRAIN_IDLE_S = 2.0
# Headers the front (or aiohttp's parser before it) reads to decide what the body is. One sent twice was read by
# the front from its first copy and passed on to Triton from its last: an Inference-Header-Content-Length checked
# as 120 reached Triton as 5. Older aiohttp does not refuse duplicate framing headers itself.
_SINGLE = ("Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding", HEADER_LENGTH)
_ENCODINGS = {"", "identity", "gzip", "deflate", "br", "zstd"}  # what aiohttp's request parser decompresses
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Triton's administration: what it serves (repository index, load, unload), shared-memory regions, log and trace
# settings. A client on another machine has no use for this machine's shared memory and must not change what the
# server loads or logs: with --host 0.0.0.0 anyone who reached the port could. Served to this machine's clients
# only (Triton itself can only ask every client for a header key, --http-restricted-api).
_ADMIN_PATH = re.compile(r"/v2/(repository|systemsharedmemory|cudasharedmemory|logging|trace)(/.*)?"
                         r"|/v2/models/[^/]+(/versions/[^/]+)?/trace/setting")
ADMIN_RPCS = frozenset({"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryStatus",
                        "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus",
                        "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings"})


def is_admin_path(path: str) -> bool:
    return _ADMIN_PATH.fullmatch(path) is not None


def why_forbidden(what: str, client: str | None) -> str | None:
    """Why a call to Triton's administration (`what`) from `client` (an IP address) is refused, or None: it is
    served to loopback clients only."""
    try:
        address = ipaddress.ip_address(client.split("%")[0]) if client is not None else None
        # an IPv4 client of a dual-stack socket shows as ::ffff:127.0.0.1, which Python 3.11 does not call loopback
        local = address is not None and (getattr(address, "ipv4_mapped", None) or address).is_loopback
    except ValueError:
        local = False
    if local:
        return None
    return (f"{what} is Triton's administration, served to clients on the server's own machine only (loopback); "
            "call it there")


@dataclass(frozen=True)
class FrontLimits:
    max_elements: int  # values per input tensor
    max_body_bytes: int  # a request body, after decompression
    idle_body_s: float = 60.0  # a body from which no byte came this long gets 408

    def too_large(self, what: str) -> str:
        """The refusal of `what` (a request body, a gRPC message) above max_body_bytes, on either front."""
        return (f"{what} is larger than this server's {self.max_body_bytes} bytes; send a smaller one, or give serve "
                "a larger --max-input-mb (tensors) or --max-image-mb (images)")


def why_refused(body: bytes, header_length: str | None, max_elements: int) -> str | None:
    """Why Triton must not read this inference request (KServe v2 JSON, optionally followed by binary tensors),
    or None. Checks what Triton's HTTP front end reads before any model runs."""
    if header_length is not None:
        # ASCII digits only: Python's int also reads "1_4" and other scripts' digits, which Triton's atoi reads as
        # 1 and 0: the front checked one JSON header and Triton read another
        if not (header_length.isascii() and header_length.isdigit()):
            return f"{HEADER_LENGTH} is {header_length[:40]!r}, not a number of bytes"
        length = int(header_length)
        if not 0 < length <= len(body):
            return f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes"
        body = body[:length]
    try:
        request = read_json(body)
    except _Unreadable as exc:
        return str(exc)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"the request is not valid JSON ({str(exc)[:200]}); send a KServe v2 inference request"
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        return "the request needs an `inputs` list (KServe v2: {\"inputs\": [{\"name\", \"shape\", \"datatype\", " \
               "\"data\"}]})"
    if "id" in request and not _STRING.accepts(request["id"]):
        return f"`id` must be a string, not {str(request['id'])[:40]}"
    problems = (_why_input_refused(tensor, max_elements) for tensor in request["inputs"])
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                 for o in outputs):
        return "`outputs` must be a list of objects with a `name`"
    return next((p for p in problems if p), None) or _why_parameters_refused(
        "the request", request.get("parameters", {}), _REQUEST_PARAMETERS) or next(
        (p for o in outputs if (p := _why_parameters_refused(f"output {o['name'][:80]}", o.get("parameters", {}),
                                                            _OUTPUT_PARAMETERS))), None)


class _Unreadable(ValueError):
    """JSON that Python's json reads but Triton's RapidJSON reads otherwise, or not at all."""


def read_json(body: bytes) -> Any:
    """`body` as Triton reads it: UTF-8 (a byte-order mark allowed), no duplicate keys, numbers within a double
    (an integer beyond 64 bits is one), no lone surrogates; _Unreadable (a ValueError) naming the difference."""
    text = body.decode("utf-8").removeprefix("\ufeff")  # Python's json would also take UTF-16 and UTF-32
    request = json.loads(text, object_pairs_hook=_unique_keys, parse_float=_double, parse_int=_integer)
    if _SURROGATE_ESCAPE.search(text) and any(isinstance(s, str) and _lone_surrogate(s) for s in _scalars(request)):
        raise _Unreadable("a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair); "
                          "send valid Unicode")
    return request


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise _Unreadable(f"key {twice[:80]!r} appears twice in one object (Triton would read the first, a JSON "
                          "library the last); give each key once")
    return dict(pairs)


def _double(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _Unreadable(f"the number {literal[:40]} is beyond a double's range (about 1.8e308)")
    return value


def _integer(literal: str) -> int:
    if len(literal.lstrip("-")) > 20:  # RapidJSON reads an integer beyond 64 bits as a double: within its range
        _double(literal)
    return int(literal)


def _lone_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _scalars(value: Any) -> Iterator[Any]:
    """Every key and scalar of a parsed JSON value, without recursion (nesting depth is the client's)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _why_input_refused(tensor: Any, max_elements: int) -> str | None:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        return "each of `inputs` must be an object with a `name`"
    name, shape = tensor["name"], tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        return f"input {name}: `shape` must be a list of whole numbers >= 0, not {str(shape)[:80]}"
    if not isinstance(tensor.get("datatype"), str):
        return f"input {name}: `datatype` must be a string such as \"FP32\""
    too_large = why_shape_refused(name, shape, max_elements)
    if too_large:
        return too_large
    parameters = tensor.get("parameters")  # Triton ignores parameters that are not an object
    if isinstance(parameters, dict):
        wrong = _why_parameters_refused(f"input {name}", parameters, _INPUT_PARAMETERS)
        if wrong:
            return wrong
    if "data" in tensor:
        return _why_data_refused(name, tensor["datatype"], tensor["data"], shape)
    return None


def _why_data_refused(name: str, datatype: str, data: Any, shape: list[int]) -> str | None:
    leaves, elements = list(_leaves(data)), math.prod(shape)
    if len(leaves) != elements:
        return f"input {name}: `data` holds {len(leaves)} values but shape {shown_shape(shape)} needs {elements}"
    kind = _DATA_KINDS.get(datatype, _NUMBER)
    if not all(kind.accepts(v) for v in leaves):
        return f"input {name}: `data` of a {datatype[:20]} tensor must hold {kind.words}"
    return None


def why_shape_refused(name: str, shape: list[int], max_elements: int) -> str | None:
    """Why a tensor of `shape` must not reach Triton (a negative dimension, more values than the limit; counted
    without overflow, as Triton's 64-bit byte count is not), or None. An empty tensor (a 0 dimension) is held to
    the limit by its other dimensions: [1, 3, 0, 2**62], 0 values sent with 0 bytes, aborted the model's Python
    stub for good (Triton 2.51, either endpoint) while [1, 3, 0, 32] got the model's own error."""
    if any(d < 0 for d in shape):
        return f"input {name[:80]}: `shape` must be a list of whole numbers >= 0, not {shown_shape(shape)}"
    spanned = math.prod(d for d in shape if d)
    if spanned > max_elements:
        elements = math.prod(shape)
        counted = f"{_count(elements)} values" if elements else f"0 values, but its other dimensions span " \
                                                                  f"{_count(spanned)}"
        return (f"input too large: {name[:80]} has shape {shown_shape(shape)}, {counted}; this server takes at "
                f"most {max_elements} per input (serve --max-input-mb)")
    return None


def shown_shape(shape: list[int]) -> str:
    """`shape` for a message, its first dimensions only: a client may send thousands, and a gRPC error's words
    travel in a header a client reads up to 8 kB of (more, and it got RESOURCE_EXHAUSTED instead)."""
    return str(shape) if len(shape) <= 8 else f"[{', '.join(map(str, shape[:8]))}, ... ({len(shape)} dimensions)]"


def _count(values: int) -> str:
    """A number of values for a message: Python will not write an integer of more than 4300 digits (20000
    dimensions of 2), and the front answered with a traceback (gRPC: UNKNOWN; in a stream it ended the stream)."""
    return str(values) if values.bit_length() <= 128 else f"over 2**{values.bit_length() - 1}"


def _why_parameters_refused(owner: str, given: Any, kinds: dict[str, _Kind]) -> str | None:
    """Why `owner`'s parameters would be misread by Triton: not an object, or a parameter it reads with a JSON type
    (`kinds`) of another type."""
    if not isinstance(given, dict):
        return f"`parameters` of {owner} must be an object"
    for key, kind in kinds.items():
        if key in given and not kind.accepts(given[key]):
            return f"parameter {key} of {owner} must be {kind.words}, not {str(given[key])[:40]}"
    return None


def _leaves(data: Any) -> Iterator[Any]:
    """The scalars of a nested JSON list, in order, without recursion (nesting depth is the client's)."""
    stack = [iter([data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


class _ClientFaults(logging.Filter):
    """Drops aiohttp's tracebacks for requests the client got wrong (a body that does not decode, a request line
    or header too long): the client gets its 400, and serve's output, where each printed some 30 lines of
    traceback, stays quiet. Anything else aiohttp logs (a fault of the front's own) still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp import http_exceptions, web_protocol

        fault = record.exc_info[1] if record.exc_info else None
        return not isinstance(fault, (http_exceptions.HttpProcessingError, web_protocol.RequestPayloadError))


_LOG = logging.getLogger("deploykit.serve.front")
_LOG.addFilter(_ClientFaults())


# How TritonJson words a body that is not JSON, or a value of another JSON type than it reads; Triton answers
# both with 500 on the endpoints the front passes unread (repository index, shared memory, logging, trace,
# generate: "Unable to parse 'data': attempt to access JSON non-number as double" for `{"input": [true]}`,
# "attempt to get members for non-object" for a body `[]`).
_TRITON_JSON_FAULTS = re.compile(r"failed to parse the request JSON buffer|attempt to (access JSON|access non-|get "
                                 r"members for non-|get size of non-|find member|add member to non-)")


class HttpFront:
    """The front on (host, port), in a thread of its own, passing requests to Triton at `upstream`; in-flight
    requests get `drain_s` when it stops."""

    def __init__(self, upstream: str, limits: FrontLimits, drain_s: float) -> None:
        self.upstream, self.limits, self.drain_s = upstream, limits, drain_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="deploykit-serve-front", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._cut = 0  # requests still in flight when the drain ran out
        self._active = 0  # requests being answered
        self._closing = False
        self._closing_since = 0.0  # the loop's time when the front began to stop
        self._drained = False  # the drain is over: a request starting now is dropped with its connection

    def start(self, host: str, port: int) -> None:
        """Listen on host:port (an OSError when it cannot)."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(host, port), self._loop).result()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> bool:
        """Stop listening, let in-flight requests finish (up to the drain), close; whether none was cut off."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        return self._cut == 0

    async def _open(self, host: str, port: int) -> None:
        from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

        # The client's own headers only: aiohttp would add Accept-Encoding: gzip, and Triton would compress the
        # answer to a client that never asked for it (curl printed gzip bytes).
        self._session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False,
                                      skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                                      timeout=ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        app.router.add_route("*", "/{path:.*}", self._pass)
        # The drain is _close's own: what aiohttp's shutdown still finds running has outlived it.
        # lingering_time 0: a body the front refused unread (a 413 on its declared length) is not read on for 10 s
        # after the answer; the connection closes instead.
        self._runner = json_error_runner(app, access_log=None, shutdown_timeout=_LAST_GRACE_S, logger=_LOG,
                                     lingering_time=0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        except BaseException:
            await self._close()
            raise

    async def _close(self) -> None:
        """Stop listening, wait (up to the drain) for the requests being answered, then close the connections.
        Not aiohttp's shutdown alone: it stops reading every connection first, so a request whose body was still
        arriving hung for the whole drain and was cut off."""
        self._closing, self._closing_since = True, self._loop.time()
        if self._runner is not None:
            for site in self._runner.sites:
                await site.stop()  # open connections stay open and read
            deadline = self._loop.time() + self.drain_s
            while self._active and self._loop.time() < deadline:
                await asyncio.sleep(0.05)
            self._drained = True
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _pass(self, request: web.Request) -> web.StreamResponse:
        late = self._drained  # its connection was accepted before the front stopped listening, its request not
        self._active += 1  # read until the drain was over: the client sees the connection reset, as if refused
        try:
            response = await self._answer(request)
            if self._closing:  # a keep-alive connection takes no further request while the front stops
                response.force_close()
            return response
        except asyncio.CancelledError:
            if self._closing and not late:
                self._cut += 1  # cancelled by the drain's end, not by a client that went away
            raise
        finally:
            self._active -= 1

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """The request's body (decompressed), or the error answer: 413 above the limit, 408 when no byte came for
        `idle_body_s` (a client that announced more than it sent held its request, and at SIGTERM the drain, for
        ever), 400 for a body that does not decompress or ends early."""
        too_large = json_error(413, self.limits.too_large("the request body"))
        declared = request.content_length  # a client that declared 1 TB and sent less must not wait for the
        if declared is not None and declared > self.limits.max_body_bytes and not request.headers.get(
                "Content-Encoding"):  # body to reach the limit
            return too_large
        body = bytearray()
        try:
            while chunk := await self._next_chunk(request):
                body += chunk
                if len(body) > self.limits.max_body_bytes:
                    return too_large
        except TimeoutError as idle:
            came = f"{len(body)} of {declared}" if declared is not None else f"{len(body)}"
            return json_error(408, f"no byte of the request body came for {idle} ({came} bytes came); send the "
                                   "whole body it announces")
        except Exception as exc:  # a body that does not decompress or ends early
            return json_error(400, f"cannot read the request body: {' '.join(str(exc).split())[:200]}")
        return bytes(body)

    async def _next_chunk(self, request: web.Request) -> bytes:
        """The next bytes of the body (b"" at its end), or TimeoutError (its words: how long none came) after
        `idle_body_s` without a byte, or `_DRAIN_IDLE_S` once the front is stopping (from the later of the last byte
        and the stop), also for a wait begun before."""
        since = self._loop.time()
        while True:
            deadline = since + self.limits.idle_body_s
            if self._closing:
                deadline = min(deadline, max(since, self._closing_since) + _DRAIN_IDLE_S)
            left = deadline - self._loop.time()
            if left <= 0:
                waited = f"{deadline - since:.3g} s"
                raise TimeoutError(waited + (" while the server stops" if self._closing else ""))
            try:  # in slices, so that a wait begun before the front stopped sees it stop
                return await asyncio.wait_for(request.content.readany(), min(left, _DRAIN_IDLE_S))
            except TimeoutError:
                continue

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if request.method not in ("GET", "POST"):  # Triton answered HEAD with a body, which broke the connection
            return json_error(405, f"{request.method[:20]} is not a KServe v2 method; use GET or POST")
        twice = next((name for name in _SINGLE if len(request.headers.getall(name, ())) > 1), None)
        if twice is not None:
            return json_error(400, f"the request has the header {twice} more than once; send it once")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:  # aiohttp passed any other body on as it came: Triton read it as JSON
            return json_error(415, f"Content-Encoding {encoding[:40]!r} is not one this server reads; send gzip, "
                               "deflate, br or an uncompressed body")
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        # The path as Triton reads it (it neither decodes %-escapes nor resolves dot segments), which is the one
        # passed on. The front checked the decoded path and passed on the one yarl resolved: /v2/models/seg/./infer
        # and /v2/models/x/../seg/infer reached Triton's inference unchecked (the 200-byte request that ends it).
        path = request.rel_url.raw_path
        if is_admin_path(path) and (reason := why_forbidden(path[:100], request.remote)):
            return json_error(403, reason)
        if request.method == "POST" and _INFER.fullmatch(path):
            reason = why_refused(body, request.headers.get(HEADER_LENGTH), self.limits.max_elements)
            if reason:
                return json_error(400, reason)
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Triton's answer to the request, as it came (its path not resolved: see _answer)."""
        from aiohttp import ClientError, web
        from yarl import URL

        assert self._session is not None
        # every copy of a header, in order (a dict kept the last only), each named as its first: aiohttp's client
        # session keeps only the last of copies whose names differ in case
        names: dict[str, str] = {}
        headers = [(names.setdefault(k.lower(), k), v) for k, v in request.headers.items()
                   if k.lower() not in _NOT_PASSED]
        target = URL(self.upstream + request.rel_url.raw_path_qs, encoded=True)
        try:
            async with self._session.request(request.method, target, data=body, headers=headers) as reply:
                answer = await reply.read()
                if reply.status >= 400:  # in KServe's shape: Triton labels some of its JSON errors text/plain
                    message = upstream_error(answer, reply.headers, reply.status)
                    client_fault = reply.status == 500 and _TRITON_JSON_FAULTS.search(message) is not None
                    return json_error(400 if client_fault else reply.status, message)
                passed = {k: v for k, v in reply.headers.items() if k.lower() not in _NOT_PASSED - {"content-encoding"}}
                return web.Response(status=reply.status, body=answer, headers=passed)
        except ClientError as exc:
            return json_error(503, f"the Triton server did not answer ({str(exc)[:200]})")
