"""Every error serve's HTTP front answers is KServe v2's `{"error": ...}` as application/json, whoever refused the
request: aiohttp's parser, the front, or Triton behind it (here a stand-in upstream answering as Triton does)."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest

pytest.importorskip("aiohttp")
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from deploykit.serve.front import FrontLimits, HttpFront

# What Triton 2.51 answered, byte for byte in status, Content-Type and body (a 404 for an unknown model's /infer
# and an unknown path, a 400 for a version not ready), and a 502 of a proxy in between that is not JSON.
TRITON_ANSWERS = {"/v2/models/nope/infer": (404, b'{"error":"Request for unknown model: \'nope\' is not found"}'),
                  "/v2/models/seg/versions/9/ready": (400, b'{"error":"Model version not ready"}'),
                  "/foo": (404, b'{"error":"Not Found"}'),
                  "/v2/models/seg/stats": (502, b"<html>Bad Gateway</html>")}


class _Triton(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = TRITON_ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def front() -> Iterator[int]:
    triton = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Triton)
    threading.Thread(target=triton.serve_forever, daemon=True).start()
    port = _free_port()
    running = HttpFront(f"http://127.0.0.1:{triton.server_address[1]}",
                        FrontLimits(max_elements=2**18, max_body_bytes=2**20), 1)
    running.start("127.0.0.1", port)
    yield port
    running.stop()
    triton.shutdown()
    triton.server_close()


def _raw(port: int, request: bytes) -> tuple[int, str, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        return reply.status, reply.getheader("Content-Type") or "", json.loads(reply.read())


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /v2 HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(200)) + b"\r\n"])
def test_a_request_aiohttp_cannot_parse_gets_a_json_400_with_the_parsers_words(front: int,
                                                                               request_bytes: bytes) -> None:
    """aiohttp answered these with its text/plain page before any handler ran."""
    status, kind, body = _raw(front, request_bytes)
    assert (status, kind.split(";")[0]) == (400, "application/json") and body["error"], (status, kind, body)


@pytest.mark.parametrize(("request_bytes", "said"), [
    (b"GET /v2/models/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "longer than this server's 8190 bytes; "
     "send a shorter URL or header"),
    (b"GET /v2 HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", "longer than this server's 8190 bytes"),
    (b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(200)) + b"\r\n",
     "more than this server's 128 headers; send fewer")])
def test_a_head_beyond_aiohttp_s_limits_is_refused_naming_the_limit(front: int, request_bytes: bytes,
                                                                     said: str) -> None:
    """aiohttp's words were "Got more than 8190 bytes when reading: bytearray(b'/v2/models/aaa...')." and "Too many
    headers received": neither which limit nor what to send."""
    status, _kind, body = _raw(front, request_bytes)
    assert status == 400 and said in body["error"], body


@pytest.mark.parametrize("path", sorted(TRITON_ANSWERS))
def test_an_error_triton_labels_text_plain_is_passed_on_as_json(front: int, path: str) -> None:
    status, body = TRITON_ANSWERS[path]
    connection = http.client.HTTPConnection("127.0.0.1", front, timeout=10)
    infer = path.endswith("/infer")
    connection.request("POST" if infer else "GET", path, body=b'{"inputs": []}' if infer else None)
    reply = connection.getresponse()
    got = json.loads(reply.read())
    assert reply.status == status and reply.getheader("Content-Type", "").startswith("application/json")
    assert got["error"] == (json.loads(body)["error"] if body.startswith(b"{") else body.decode())


def test_tritonclient_reads_the_message_of_an_error_that_is_not_json(front: int) -> None:
    """The client's view: its exception carries the upstream's words and status; it said "an exception occurred in
    the client while decoding the response"."""
    with pytest.raises(InferenceServerException) as raised:
        triton_http.InferenceServerClient(f"127.0.0.1:{front}").get_inference_statistics("seg")
    assert raised.value.status() == "502" and raised.value.message() == "<html>Bad Gateway</html>"



def test_an_expectation_aiohttp_does_not_meet_gets_a_json_417(front: int) -> None:
    """aiohttp raises it before the handler and its middlewares: "Unknown Expect: ..." came in text/plain."""
    status, kind, body = _raw(front, b"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n"
                                     b"Content-Length: 2\r\n\r\n{}")
    assert (status, kind.split(";")[0]) == (417, "application/json") and "something-else" in body["error"]
