"""A bounded HTTP client for a KServe v2 endpoint (bench --url): the endpoint's URL checked before use, and one
request-answer exchange whose whole answer is bounded in time and memory, so that a server trickling bytes or
announcing an endless body cannot hold or exhaust the client."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploykit.errors import InputError

MAX_DOCUMENT = 16 << 20  # bytes of a metadata or statistics document, or an answer's JSON: far above real ones
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    prefix: str  # a path before /v2, e.g. behind a gateway

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        fix = f"--url {url}: give http://HOST:PORT[/PREFIX] (plain HTTP; put TLS in front with a proxy)"
        try:
            parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
            port = parsed.port  # a port that is not a number in 0-65535 raises here
        except ValueError as exc:  # also an unclosed IPv6 bracket
            raise InputError(f"{fix}: {exc}") from None
        if parsed.scheme != "http" or not parsed.hostname:
            raise InputError(fix)
        if parsed.username is not None or parsed.password is not None:
            raise InputError(f"{fix}: bench sends no credentials and would write them into its report; "
                             "drop USER:PASSWORD@ (reach a server that needs them through a local proxy)")
        if parsed.query or parsed.fragment or any(c.isspace() or not c.isprintable() for c in parsed.netloc
                                                  + parsed.path):
            raise InputError(f"{fix}: the URL has a query, a fragment, spaces or control characters, which bench "
                             "would not send")
        try:
            parsed.hostname.encode("idna")  # what http.client sends in the Host header
        except UnicodeError:
            raise InputError(f"{fix}: {parsed.hostname!r} is not a host name") from None
        # a request line is ASCII: a path of other characters goes percent-encoded, as a browser sends it
        return cls(parsed.hostname, port or 80, urllib.parse.quote(parsed.path.rstrip("/"), safe="/%:@!$&'()*+,;=~"))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"http://{host}:{self.port}{self.prefix}"

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str, timeout: float = 10.0, *, optional: bool = False) -> Any:
        """GET a JSON object; None when the endpoint does not have it (an answer other than 200). An answer that
        is not a JSON object (an HTML page, a broken or endless body) is bad input, or None when `optional`."""
        connection = self.connect(timeout)
        where = f"GET {self.url}{path}"
        try:
            answer = exchange(connection, "GET", self.prefix + path, deadline=time.perf_counter() + timeout,
                              keep=MAX_DOCUMENT, whole=False)
        except TimeoutError:
            if optional:
                return None
            raise InputError(f"{where} got no whole answer within {timeout:g} s; is {self.url} a KServe v2 "
                             "endpoint (Triton, deploykit serve), and not overloaded?") from None
        except OSError as exc:
            if optional:
                return None
            raise InputError(f"cannot reach {self.url} ({exc or type(exc).__name__}: {where}); is the server "
                             "up? (deploykit serve ARTIFACT)") from None
        except http.client.HTTPException as exc:
            if optional:
                return None
            raise InputError(f"{where} answered with broken HTTP ({type(exc).__name__}: {exc}); is {self.url} "
                             "a KServe v2 endpoint (Triton, deploykit serve)?") from None
        finally:
            connection.close()
        if answer.status != 200:
            return None
        document = json_object(answer.body) if answer.complete else None
        if document is None and not optional:
            what = "more than 16 MB" if not answer.complete else repr(answer.body[:60])[1:]
            raise InputError(f"{where} answered {what}, not a JSON object; is {self.url} a KServe v2 endpoint "
                             "(Triton, deploykit serve)? Check --url")
        return document


def json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes  # its first `keep` bytes
    complete: bool  # whether `body` is all of it


def exchange(connection: http.client.HTTPConnection, method: str, path: str, *, deadline: float, keep: int,
             whole: bool = True, body: bytes | None = None, headers: Mapping[str, str] | None = None) -> Answer:
    """One request and its answer by `deadline` (else TimeoutError), keeping the body's first `keep` bytes. The
    deadline bounds the whole answer, not each read, so a server trickling bytes cannot hold a client forever;
    the rest is read and dropped (`whole`: the answer arrived when its last byte did) or left unread, so an
    endless or huge body costs no memory."""
    def left() -> float:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError(f"no whole answer within the request's time ({method} {path})")
        return remaining

    connection.timeout = left()
    connection.request(method, path, body=body, headers=dict(headers or {}))
    sock = connection.sock  # getresponse() hands it to the response when the server closes after answering
    response = connection.getresponse()
    kept = bytearray()
    while True:
        if sock is not None:
            sock.settimeout(left())
        chunk = response.read1(READ_CHUNK)  # one read: returns what arrived, not a full chunk
        kept += chunk[: keep - len(kept)]
        if not chunk or (len(kept) >= keep and not whole):
            # read1 leaves a finished response open, which would refuse the next request on this connection;
            # one left unread is closed with its connection by the caller
            response.close()
            return Answer(response.status, response.headers, bytes(kept), not chunk)
