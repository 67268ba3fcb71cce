"""deploykit serve's HTTP front: the address clients reach, passing each request to the Triton server on a
private loopback port once it is known to be safe for Triton's own HTTP front end to read.

Why a front: the bundled Triton (2.51) reads a request before any model runs, and three kinds of small
requests take it down: a JSON input whose `shape` promises more values than memory holds (it allocates the
tensor first and aborts: a 200-byte request ends the server); a `shape` whose byte size overflows 64 bits to
0, sent with 0 bytes (the model's Python stub aborts reading it and every later request to that model gets
500 while /v2/health/ready still says 200); a gzip-compressed body that inflates past memory. It also
answers malformed JSON with 500. The front answers all of these with 400 (413 for a body above the limit)
and a message naming what was wrong; everything else (health, metadata, statistics, binary tensors, the
answers) passes through unchanged. aiohttp decompresses bodies within the size limit.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp comes with the serve extra (tritonclient[http]): imported where the front runs
    from aiohttp import ClientSession, web

HEADER_LENGTH = "Inference-Header-Content-Length"
_INFER = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer")
# Hop-by-hop and framing headers: each side of the front sets its own.
_NOT_PASSED = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
               "te", "trailer", "upgrade", "proxy-connection"}
_BOOLEAN_PARAMETERS = ("binary_data", "binary_data_output")


@dataclass(frozen=True)
class FrontLimits:
    max_elements: int  # values per input tensor
    max_body_bytes: int  # a request body, after decompression


def why_refused(body: bytes, header_length: str | None, max_elements: int) -> str | None:
    """Why Triton must not read this inference request (KServe v2 JSON, optionally followed by binary tensors),
    or None. Checks what Triton's HTTP front end reads before any model runs."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            return f"{HEADER_LENGTH} is {header_length[:40]!r}, not a number of bytes"
        if not 0 < length <= len(body):
            return f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes"
        body = body[:length]
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"the request is not valid JSON ({str(exc)[:200]}); send a KServe v2 inference request"
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        return "the request needs an `inputs` list (KServe v2: {\"inputs\": [{\"name\", \"shape\", \"datatype\", " \
               "\"data\"}]})"
    problems = (_why_input_refused(tensor, max_elements) for tensor in request["inputs"])
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                 for o in outputs):
        return "`outputs` must be a list of objects with a `name`"
    parameters = [request.get("parameters", {}), *(o.get("parameters", {}) for o in outputs)]
    return next((p for p in problems if p), None) or _why_parameters_refused(parameters)


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
    elements = math.prod(shape)
    size = (tensor.get("parameters") or {}).get("binary_data_size") if isinstance(tensor.get("parameters"),
                                                                                    (dict, type(None))) else None
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        return f"input {name}: `binary_data_size` must be a whole number of bytes, not {str(size)[:40]}"
    if "data" in tensor:
        leaves = list(_leaves(tensor["data"]))
        if len(leaves) != elements:
            return f"input {name}: `data` holds {len(leaves)} values but shape {shape} needs {elements}"
        wanted = str if tensor["datatype"] == "BYTES" else (int, float)
        if not all(isinstance(v, wanted) for v in leaves):
            kind = "strings" if wanted is str else "numbers"
            return f"input {name}: `data` of a {tensor['datatype'][:20]} tensor must hold {kind}"
    return None


def why_shape_refused(name: str, shape: list[int], max_elements: int) -> str | None:
    """Why a tensor of `shape` must not reach Triton (a negative dimension, more values than the limit; counted
    without overflow, as Triton's 64-bit byte count is not), or None."""
    if any(d < 0 for d in shape):
        return f"input {name}: `shape` must be a list of whole numbers >= 0, not {str(shape)[:80]}"
    elements = math.prod(shape)
    if elements > max_elements:
        return (f"input too large: {name} has shape {shape}, {elements} values; this server takes at most "
                f"{max_elements} per input (serve --max-input-mb)")
    return None


def _why_parameters_refused(parameters: list[Any]) -> str | None:
    for given in parameters:
        if not isinstance(given, dict):
            return "`parameters` must be an object"
        for key in _BOOLEAN_PARAMETERS:
            if key in given and not isinstance(given[key], bool):
                return f"parameter {key} must be true or false, not {str(given[key])[:40]}"
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


def _error(status: int, message: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": message}, status=status)


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
        self._closing = False

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
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.drain_s)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        except BaseException:
            await self._close()
            raise

    async def _close(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _pass(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            if self._closing:
                self._cut += 1  # cancelled by the drain's end, not by a client that went away
            raise

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import ClientError, web

        if request.method not in ("GET", "POST"):  # Triton answered HEAD with a body, which broke the connection
            return _error(405, f"{request.method[:20]} is not a KServe v2 method; use GET or POST")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the request body is larger than this server's {self.limits.max_body_bytes} "
                               "bytes (serve --max-input-mb, --max-image-mb)")
        except Exception as exc:  # a body that does not decompress or ends early
            return _error(400, f"cannot read the request body: {' '.join(str(exc).split())[:200]}")
        if request.method == "POST" and _INFER.fullmatch(request.path):
            reason = why_refused(body, request.headers.get(HEADER_LENGTH), self.limits.max_elements)
            if reason:
                return _error(400, reason)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_PASSED}
        try:
            async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
                                             headers=headers) as reply:
                answer = await reply.read()
                passed = {k: v for k, v in reply.headers.items() if k.lower() not in _NOT_PASSED - {"content-encoding"}}
                return web.Response(status=reply.status, body=answer, headers=passed)
        except ClientError as exc:
            return _error(503, f"the Triton server did not answer ({str(exc)[:200]})")
