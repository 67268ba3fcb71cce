"""bench --url's pieces that need no server: endpoints, request shapes, bodies, the server's batch counts,
and the command's argument checks. (tests/serve runs it against the real server.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit.bench import load
from deploykit.bench.kserve_bodies import make_bodies, resolve_shape
from deploykit.bench.kserve_http import Endpoint
from deploykit.bench.remote import LoadConfig, batch_difference, run_remote_bench
from deploykit.cli import cli
from deploykit.environment import cpu_model
from deploykit.errors import InputError


def test_endpoints_parse_and_refuse_what_is_not_plain_http() -> None:
    assert Endpoint.parse("http://127.0.0.1:8000") == Endpoint("127.0.0.1", 8000, "")
    assert Endpoint.parse("localhost:9000/gateway/") == Endpoint("localhost", 9000, "/gateway")
    with pytest.raises(InputError, match="http://HOST:PORT"):
        Endpoint.parse("https://example.invalid")


def test_shapes_take_batch_1_and_the_given_input_shape() -> None:
    spec = {"name": "input", "datatype": "FP32", "shape": [-1, 3, -1, -1]}
    assert resolve_shape(spec, (1, 3, 64, 48)) == (1, 3, 64, 48)
    assert resolve_shape({"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}, None) == (1, 3, 8, 8)
    assert resolve_shape({"name": "image", "datatype": "BYTES", "shape": [-1, 1]}, None) == (1, 1)
    with pytest.raises(InputError, match="--input-shape"):
        resolve_shape(spec, None)
    with pytest.raises(InputError, match="3 dimensions"):
        resolve_shape(spec, (1, 3, 4))


def test_one_input_shape_serves_inputs_of_other_ranks_with_known_dims() -> None:
    scores = {"name": "scores", "datatype": "FP32", "shape": [-1, 3, -1, -1]}
    size = {"name": "size", "datatype": "INT32", "shape": [-1, 2]}  # the image step after a model (NAME_post)
    assert resolve_shape(scores, (2, 3, 16, 16)) == (2, 3, 16, 16)
    assert resolve_shape(size, (2, 3, 16, 16)) == (2, 2)
    with pytest.raises(InputError, match="of its 2 dimensions"):
        resolve_shape({"name": "size", "datatype": "INT32", "shape": [-1, -1]}, (2, 3, 16, 16))


def test_json_bodies_carry_every_value_and_differ() -> None:
    inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 2, 2]},
              {"name": "image", "datatype": "BYTES", "shape": [-1, 1]}]
    bodies = make_bodies(inputs, {"input": (1, 3, 2, 2), "image": (1, 1)}, b"\x89PNG", binary=False, count=2)
    first, second = (json.loads(b.data) for b in bodies)
    assert [i["name"] for i in first["inputs"]] == ["input", "image"]
    assert len(first["inputs"][0]["data"]) == 12 and first["inputs"][0]["data"] != second["inputs"][0]["data"]
    assert first["inputs"][1]["data"] == ["\x89PNG"]


def test_binary_bodies_use_the_header_length() -> None:
    inputs = [{"name": "input", "datatype": "FP16", "shape": [-1, 4]}]
    body = make_bodies(inputs, {"input": (1, 4)}, b"", binary=True, count=1)[0]
    size = int(body.headers["Inference-Header-Content-Length"])
    header = json.loads(body.data[:size])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 8 == len(body.data) - size
    assert np.frombuffer(body.data[size:], np.float16).shape == (4,)


def test_batch_difference_counts_executions_per_size_over_the_level() -> None:
    def stats(*entries: tuple[str, int, int]) -> dict[str, object]:
        models: dict[str, list[dict[str, object]]] = {}
        for model, size, count in entries:
            models.setdefault(model, []).append({"batch_size": size, "compute_infer": {"count": count, "ns": 1}})
        return {"model_stats": [{"name": m, "batch_stats": b} for m, b in models.items()]}

    before = stats(("seg", 1, 10), ("seg", 4, 2))
    after = stats(("seg", 1, 13), ("seg", 4, 2), ("seg", 8, 5), ("other", 1, 1))
    assert batch_difference(before, after) == [{"model": "other", "batch_size": 1, "executions": 1},
                                               {"model": "seg", "batch_size": 1, "executions": 3},
                                               {"model": "seg", "batch_size": 8, "executions": 5}]
    assert batch_difference(None, None) == []


@pytest.mark.parametrize(("args", "words"), [
    (["bench", "--url", "http://127.0.0.1:1"], "--model"),
    (["bench", "model.onnx", "--url", "http://127.0.0.1:1", "--model", "m"], "not both"),
    (["bench", "model.onnx", "--concurrency", "1,4"], "--url"),
    (["bench", "--url", "http://127.0.0.1:1", "--model", "m", "--iterations", "5"], "--duration"),
    (["bench", "--url", "http://127.0.0.1:1", "--model", "m", "--concurrency", "0"], "integers from 1 to"),
    (["bench", "--url", "http://127.0.0.1:1", "--model", "m"], "cannot reach"),
])
def test_bench_url_arguments_fail_in_one_line(args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and words in result.output, result.output


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:99999", "out of range"),
    ("http://127.0.0.1:abc", "integer"),
    ("http://[::1", "IPv6"),
    ("http://user:secret@127.0.0.1:8000", "credentials"),
    ("http://127.0.0.1:8000/?model=x", "query"),
    ("http://127.0.0.1:8000/a b", "spaces"),
    ("http://\x08:8000", "control characters"),
    ("http://.¡:8000", "not a host name"),
])
def test_endpoints_refuse_urls_they_would_not_send_as_given(url: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        Endpoint.parse(url)
    assert Endpoint.parse("http://[::1]:8000").url == "http://[::1]:8000"
    assert Endpoint.parse("http://127.0.0.1:8000/modèles/a%20b").prefix == "/mod%C3%A8les/a%20b"


_METADATA = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]}
_INFERRED = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [0]}]}).encode()


class _Server:
    """A loopback HTTP server answering each path with what a test sets: (status, body), or raw bytes sent as
    they are (not HTTP), or a generator of chunks for a body announced as `length` bytes."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.inferred: list[bytes] = []  # the body of each inference request
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        answers, inferred = self.answers, self.inferred

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/infer"):
                    inferred.append(body)
                answer = answers.get(self.path, (404, b"{}"))
                try:
                    if isinstance(answer, bytes):
                        self.wfile.write(answer)
                        self.close_connection = True
                        return
                    status, body, *length = answer
                    self.send_response(status)
                    self.send_header("Content-Length", str(length[0] if length else len(body)))
                    self.end_headers()
                    for chunk in [body] if isinstance(body, bytes) else body:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    self.close_connection = bool(length)
                except OSError:  # the client gave up on an endless answer
                    self.close_connection = True

            do_POST = do_GET

        return Handler


@pytest.fixture
def server() -> Iterator[_Server]:
    fake = _Server()
    fake.answers.update({"/v2": (200, b'{"name": "fake", "extensions": []}'),
                         "/v2/models/m": (200, json.dumps(_METADATA).encode()),
                         "/v2/models/m/infer": (200, _INFERRED)})
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def _trickle() -> Iterator[bytes]:
    for _ in range(100):
        yield b" "
        time.sleep(0.1)


@pytest.mark.parametrize(("path", "answer", "words"), [
    ("/v2", (200, b"<html><body>hello</body></html>"), "not a JSON object"),
    ("/v2", (200, b"\x00\xffgarbage{{"), "not a JSON object"),
    ("/v2", (200, b"[1, 2]"), "not a JSON object"),
    ("/v2", (200, b'{"na', 100), "not a JSON object"),  # the connection closes mid-answer
    ("/v2", b"NOT HTTP\r\n\r\n", "broken HTTP"),
    ("/v2", (200, iter([b" " * (1 << 20)] * 20), 1 << 34), "more than 16 MB"),
    ("/v2/models/m", (200, b'{"inputs": [{"name": "x"}]}'), "not KServe v2 metadata"),
    ("/v2/models/m", (200, b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": ["a"]}]}'), "shape of integers"),
    ("/v2/models/m", (200, b'{"inputs": {"x": 1}}'), "lists no inputs"),
    ("/v2/models/m/infer", (200, b"<html>ok</html>"), "not a KServe v2 inference response"),
    ("/v2/models/m/infer", (400, b'{"error": "unexpected input name"}'), "unexpected input name"),
])
def test_bench_url_fails_in_one_line_on_what_is_not_a_kserve_answer(server: _Server, path: str, answer: Any,
                                                                     words: str) -> None:
    server.answers[path] = answer
    result = CliRunner().invoke(cli, ["bench", "--url", server.url, "--model", "m", "--concurrency", "1",
                                      "--duration", "0.1", "--warmup", "0"])
    assert result.exit_code == 2 and words in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_trickling_answer_ends_at_the_request_timeout(server: _Server) -> None:
    server.answers["/v2"] = (200, _trickle(), 100)
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"no whole answer within 0\.5 s"):
        Endpoint.parse(server.url).get("/v2", timeout=0.5)
    assert time.perf_counter() - started < 3


def test_bench_url_times_a_kserve_server_and_ignores_statistics_off_the_schema(server: _Server) -> None:
    server.answers["/v2/models/stats"] = (200, b'{"model_stats": [{"name": "m", "batch_stats": [{"x": 1}]}]}')
    report = run_remote_bench(server.url, "m", config=LoadConfig(concurrency=(1, 2), duration_s=0.2, warmup_s=0))
    assert [r.errors for r in report.results] == [0, 0] and all(r.latency.count > 0 for r in report.results)
    assert all(r.server_batches == [] for r in report.results)


def test_bench_url_names_this_machine_as_the_client_not_where_it_was_timed(server: _Server) -> None:
    """The model ran on the server: the CPU beside the figures is the client's, and said to be."""
    result = CliRunner().invoke(cli, ["bench", "--url", server.url, "--model", "m", "--concurrency", "1",
                                      "--duration", "0.1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert f"\nclient {cpu_model()}, " in result.stdout and "timed on" not in result.stdout


@pytest.mark.parametrize("option", [["--batch", "4"], ["--backend", "openvino"], ["--threads", "1"],
                                    ["--set", "output_stride=8"], ["--task", "saliency"], ["--no-roofline"]])
def test_bench_url_refuses_options_of_a_model_timed_here(option: list[str]) -> None:
    result = CliRunner().invoke(cli, ["bench", "--url", "http://127.0.0.1:1", "--model", "m", *option])
    assert result.exit_code == 2 and f"{option[0]}: only for a model timed in this process" in result.output, \
        result.output


def test_requests_too_large_to_build_here_are_refused_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploykit.bench.kserve_bodies import check_bodies_fit

    monkeypatch.setattr("deploykit.environment.available_memory", lambda: 32 << 20)
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    check_bodies_fit(inputs, {"x": (1, 3, 256, 256)}, b"", binary=True)  # 8 x 1 MB + 2 MB: fits
    with pytest.raises(InputError, match=r"x 1x3x256x256 needs about .*smaller --input-shape"):
        check_bodies_fit(inputs, {"x": (1, 3, 256, 256)}, b"", binary=False)  # 8 x 4 MB of JSON + 11 MB


def test_a_server_declaring_a_huge_input_is_refused_in_one_line(server: _Server) -> None:
    server.answers["/v2/models/m"] = (200, json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 100000, 100000, 100000]}]}).encode())
    result = CliRunner().invoke(cli, ["bench", "--url", server.url, "--model", "m", "--concurrency", "1"])
    assert result.exit_code == 2 and "smaller --input-shape" in result.output, result.output


def test_bench_url_on_a_busy_machine_says_so_without_counting_the_server(server: _Server,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The server under test runs here: its CPU time is not other work. The output said 'other processes kept
    1.96 of 2 cores busy' (the server), a load average 'unknown after' beside a known one, and that
    'contenders ran interleaved' (a served model has none)."""
    monkeypatch.setattr(load, "load_average", lambda: 64.0)
    result = CliRunner().invoke(cli, ["bench", "--url", server.url, "--model", "m", "--concurrency", "1",
                                      "--duration", "0.1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "machine load while timing: 1-minute load average 64.00 before\n" in result.stdout
    assert "the machine was busy before timing (1-minute load average 64.00 before): the clients and the server" \
        in result.stdout
    assert not any(w in result.stdout for w in ("unknown", "other processes kept", "contenders"))


_TWO_INPUTS = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]},
                                       {"name": "ids", "datatype": "INT64", "shape": [-1, 4]}]}


def _bench(server: _Server, *extra: str) -> Any:
    return CliRunner().invoke(cli, ["bench", "--url", server.url, "--model", "m", "--concurrency", "1", "--duration",
                                    "0.1", "--warmup", "0", *extra])


def _sent(server: _Server, name: str) -> list[np.ndarray]:
    """The tensor `name` of each inference request the server got (JSON bodies)."""
    tensors = [next(t for t in json.loads(body)["inputs"] if t["name"] == name) for body in server.inferred]
    return [np.asarray(t["data"]).reshape(t["shape"]) for t in tensors]


def test_integer_inputs_get_random_values_in_a_stated_range_not_zeros(server: _Server) -> None:
    """Every integer input was sent as zeros: an index or a class id took one path (the same row, the same class)
    and the figure was not the model's; the report did not say."""
    server.answers["/v2/models/m"] = (200, json.dumps(_TWO_INPUTS).encode())
    result = _bench(server, "--json")
    assert result.exit_code == 0, result.output
    ids = np.concatenate(_sent(server, "ids"))
    assert ids.min() >= 0 and ids.max() <= 255 and len(np.unique(ids)) > 4, ids
    assert any("ids got random values in [0, 255]" in n and "--inputs" in n for n in json.loads(result.stdout)["notes"])


def test_bench_url_sends_the_tensors_of_inputs_a_row_per_request(server: _Server, tmp_path: Path) -> None:
    server.answers["/v2/models/m"] = (200, json.dumps(_TWO_INPUTS).encode())
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8))  # float64: cast to the server's FP32
    ids = np.arange(12, dtype=np.int32).reshape(3, 4) + 1000
    np.savez(tmp_path / "real.npz", x=x, ids=ids)
    result = _bench(server, "--inputs", str(tmp_path / "real.npz"), "--json")
    assert result.exit_code == 0, result.output
    sent_ids = _sent(server, "ids")
    assert {tuple(a.ravel()) for a in sent_ids} == {tuple(row) for row in ids}
    assert all(a.shape == (1, 3, 8, 8) for a in _sent(server, "x"))
    assert not any("random values" in n for n in json.loads(result.stdout)["notes"])
    batched = _bench(server, "--inputs", str(tmp_path / "real.npz"), "--input-shape", "3,3,8,8")
    assert batched.exit_code == 0 and _sent(server, "ids")[-1].shape == (3, 4), batched.output


_DTYPES = st.sampled_from(["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint64", "bool"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=_DTYPES, x_shape=st.one_of(st.integers(0, 3).map(lambda n: [n, 3, 8, 8]),
                                       st.lists(st.sampled_from([0, 1, 3, 8]), min_size=4, max_size=4),
                                       st.lists(st.integers(0, 9), max_size=5)),
       name=st.sampled_from(["x", "x", "x", "y"]), scale=st.sampled_from([1, 1e10]), ids_dtype=_DTYPES)
def test_inputs_off_the_servers_metadata_exit_2_in_one_line_before_any_inference(
        server: _Server, tmp_path: Path, dtype: str, x_shape: list[int], name: str, scale: float,
        ids_dtype: str) -> None:
    """An .npz whose array does not fit an input (name, rank, a fixed dimension, a dtype that does not cast
    without loss, too few rows, values that do not fit or are not finite) fails in one line naming the input and
    what the server wants, before any inference request; one that fits is sent as the server's datatype."""
    server.answers["/v2/models/m"] = (200, json.dumps(_TWO_INPUTS).encode())
    server.inferred.clear()
    file = tmp_path / "given.npz"
    values = np.random.default_rng(1).standard_normal(x_shape) * scale
    with np.errstate(over="ignore", invalid="ignore"):  # 1e10 as float16 is inf: one of the cases
        arrays = {"ids": (np.ones((max(x_shape[:1] or [1]), 4)) * scale).astype(ids_dtype),
                  name: values.astype(dtype)}
    np.savez(file, **arrays)
    result = _bench(server, "--inputs", str(file))
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
        assert "--inputs" in result.output and not server.inferred, result.output
        return
    sent = json.loads(server.inferred[0])["inputs"]
    assert [(t["name"], t["datatype"]) for t in sent] == [("x", "FP32"), ("ids", "INT64")]
    assert sent[0]["shape"][1:] == [3, 8, 8] and sent[1]["shape"][1:] == [4]


def test_an_image_for_a_model_without_a_bytes_input_is_refused_not_ignored(server: _Server, tmp_path: Path) -> None:
    """--image went nowhere without a word when the model takes tensors: the run timed random tensors."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = _bench(server, "--image", str(tmp_path / "a.png"))
    assert result.exit_code == 2 and "has no BYTES input" in result.output and not server.inferred, result.output


def test_an_image_or_inputs_a_model_cannot_take_fail_before_any_inference(server: _Server, tmp_path: Path) -> None:
    """A file that is not an image went to the server as one (its 400 was the first word); --inputs for a model
    that takes only encoded images said its tensor inputs were []."""
    server.answers["/v2/models/m"] = (200, b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}]}')
    (tmp_path / "notes.png").write_text("not an image")
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    for args, words in [(["--image", str(tmp_path / "notes.png")], "cannot read --image"),
                        (["--inputs", str(tmp_path / "x.npz")], "takes no tensors, only encoded BYTES (image)")]:
        result = _bench(server, *args)
        assert result.exit_code == 2 and words in result.output and not server.inferred, result.output
