"""KServe v2's error shape for every error serve's HTTP front answers: `{"error": "..."}` as application/json,
which tritonclient, KServe's clients and `requests(...).json()` read.

Two sources answered otherwise. aiohttp itself, for a request it refuses before any handler runs (a malformed
request line, header, chunk or Content-Length: `400 Bad Request` and the parser's words in text/plain, which
tritonclient reported as "an exception occurred in the client while decoding the response"; an unknown
`Expect:`, 417), or a handler that raised (500 in text/plain or HTML). And Triton, whose errors are JSON
labelled text/plain on some endpoints (an unknown model's 404 on /infer, an unknown path's 404, a model version
not ready). `json_error_runner` covers the first for every connection, `upstream_error` the second for every
answer passed on.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp comes with the serve extra: imported where the front runs
    from aiohttp import web

_MESSAGE_CHARS = 500
# aiohttp's limits on a request's head (its defaults, given to it here so that the refusals can name them): a URL or
# header line beyond _MAX_LINE, more than _MAX_HEADERS headers got "Got more than 8190 bytes when reading:
# bytearray(b'/v2/mod...')." and "Too many headers received", which say neither which limit nor what to send.
_MAX_LINE, _MAX_HEADERS = 8190, 128


def json_error(status: int, message: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": message}, status=status)


def upstream_error(answer: bytes, headers: Mapping[str, str], status: int) -> str:
    """The message of an error answer Triton gave: its `error` field, or else its text (or the status's name)."""
    try:
        raw = zlib.decompress(answer, wbits=47) if headers.get("Content-Encoding") else answer  # gzip or zlib
        message = json.loads(raw)["error"]
        if isinstance(message, str):
            return message
    except (zlib.error, ValueError, TypeError, KeyError):
        pass
    text = answer.decode("utf-8", errors="replace").strip() if not headers.get("Content-Encoding") else ""
    return " ".join(text.split())[:_MESSAGE_CHARS] or _phrase(status)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"status {status}"


def json_error_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """aiohttp's AppRunner for `app`, whose connections answer the requests aiohttp refuses itself (and every
    HTTP error raised) in KServe v2's error shape, same status, aiohttp's words; not in text/plain."""
    from aiohttp import web

    class JsonErrors(web.RequestHandler):
        __slots__ = ()

        def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            super().handle_error(request, status, exc, message)  # logs it; raises when an answer has begun
            said = _head_refused(exc) or (message if status != HTTPStatus.INTERNAL_SERVER_ERROR and message
                                          else _phrase(status))
            answer = json_error(status, " ".join(said.split())[:_MESSAGE_CHARS])
            answer.force_close()  # as aiohttp's own: the connection's state is unknown after such a request
            return answer

        async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                                  start_time: float | None) -> Any:
            """Every answer passes here, also an HTTP error raised before the handler and its middlewares run
            (an `Expect:` other than 100-continue got 417 "Unknown Expect: ..." in text/plain)."""
            if isinstance(resp, web.HTTPException) and resp.status >= 400:
                resp = json_error(resp.status, " ".join((resp.text or resp.reason).split())[:_MESSAGE_CHARS])
            return await super().finish_response(request, resp, start_time)

    class JsonErrorServer(web.Server):
        def __call__(self) -> web.RequestHandler:
            handler = super().__call__()
            handler.__class__ = JsonErrors  # aiohttp builds the handler; only its error page differs
            return handler

    class Runner(web.AppRunner):
        async def _make_server(self) -> web.Server:
            server = await super()._make_server()
            server.__class__ = JsonErrorServer
            return server

    return Runner(app, max_line_size=_MAX_LINE, max_field_size=_MAX_LINE, max_headers=_MAX_HEADERS, **kwargs)


def _head_refused(exc: BaseException | None) -> str | None:
    """The refusal of a request whose head is beyond aiohttp's limits, in words naming the limit, or None."""
    from aiohttp import http_exceptions

    if isinstance(exc, http_exceptions.LineTooLong):
        line = bytes(exc.args[0])[:40].decode("latin-1")
        return (f"a line of the request's head (its URL or a header, beginning {line!r}) is longer than this "
                f"server's {exc.args[1]} bytes; send a shorter URL or header")
    if isinstance(exc, http_exceptions.BadHttpMessage) and "Too many headers" in exc.message:
        return f"the request has more than this server's {_MAX_HEADERS} headers; send fewer"
    return None
