"""`deploykit serve` under load and bad requests: the real server (Triton bundled in nvidia-pytriton) on a free
loopback port, a tiny segmenter; every answer is checked against the artifact's own Runner."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("tritonclient.http")
from deploykit.serve.engine import find_bundle

try:
    find_bundle()
except Exception as exc:  # the serve extra is not installed: nothing to start
    pytest.skip(f"no bundled Triton server: {exc}", allow_module_level=True)

import tritonclient.http as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.images import decode_image, preprocess
from deploykit.io.masks import prediction_at_size
from deploykit.io.metadata import read_metadata
from deploykit.targets.resolve import open_target
from deploykit.zoo.sources import load_model

USER = "tests.fixtures.user_models:tiny_segmenter"
SIZE = (32, 32)  # the model's recorded input size, which images are resized to


def _free_ports(count: int = 1) -> list[int]:
    """`count` distinct free loopback ports (each held while the next is found)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    artifact: Path
    grpc_port: int | None = None
    host: str = "127.0.0.1"

    def post(self, model: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            connection.close()


def start_server(artifacts: list[Path], *extra: str, grpc: bool = False, host: str = "127.0.0.1") -> Server:
    port, grpc_port = _free_ports(2)
    process = subprocess.Popen([sys.executable, "-m", "deploykit", "serve", *map(str, artifacts), "--port", str(port),
                                "--queue-delay-us", "2000", "--max-input-mb", "1", "--max-image-mb", "0.05",
                                *(["--grpc-port", str(grpc_port)] if grpc else []), "--host", host, *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    where = f"[{host}]" if ":" in host else host
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            with urllib.request.urlopen(f"http://{where}:{port}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return Server(process, port, artifacts[0], grpc_port if grpc else None, host)
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("the server was not ready in 180 s")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "seg.onnx"
    onnx_from_torch(load_model(USER, options={"num_classes": 4}), path, input_shape=(1, 3, *SIZE), simplify=False)
    return path


@pytest.fixture(scope="module")
def built(artifact: Path) -> dict[str, Path]:
    """The same model built by the other CPU backends, served beside it by name: ONNX Runtime INT8 and, when
    OpenVINO is installed (the test extra has it), OpenVINO fp32."""
    from click.testing import CliRunner

    from deploykit.backends.base import BACKENDS
    from deploykit.cli import cli

    builds = {"seg_q": ("seg.int8.ort.onnx", "onnxruntime", "--int8", "--calib-data", "synthetic")}
    if BACKENDS["openvino"].availability().ready:
        builds["seg_ov"] = ("seg.xml", "openvino")
    artifacts = {}
    for name, (file, backend, *options) in builds.items():
        out = artifact.with_name(file)
        result = CliRunner().invoke(cli, ["build-engine", str(artifact), "--backend", backend, *options, "-o",
                                          str(out)])
        assert result.exit_code == 0, result.output
        artifacts[name] = out
    return artifacts


@pytest.fixture(scope="module")
def gray_artifact(artifact: Path) -> Path:
    """A model whose input has 1 channel: served as tensors, never as images (which decode to RGB)."""
    path = artifact.with_name("gray.onnx")
    onnx_from_torch(load_model(USER, options={"num_classes": 4, "in_channels": 1}), path,
                    input_shape=(1, 1, *SIZE), simplify=False)
    return path


ODD_NAMES = {"input": 'in"put\\b', "output": "out\nput"}  # a quote, a backslash, a newline


@pytest.fixture(scope="module")
def odd_artifact(artifact: Path) -> Path:
    """The segmenter with tensor names that need escaping in config.pbtxt."""
    from tests.package.test_triton import renamed

    path = artifact.with_name("odd.onnx")
    onnx.save(renamed(onnx.load(str(artifact)), ODD_NAMES), str(path))
    return path


@pytest.fixture(scope="module")
def server(artifact: Path, gray_artifact: Path, built: dict[str, Path], odd_artifact: Path) -> Iterator[Server]:
    names = [f"--name={name}" for name in ("seg", "gray", *built, "odd")]
    running = start_server([artifact, gray_artifact, *built.values(), odd_artifact], *names, grpc=True)
    yield running
    running.process.send_signal(signal.SIGTERM)
    running.process.wait(30)


@pytest.fixture(scope="module")
def runner(artifact: Path) -> Iterator[Any]:
    with open_target(str(artifact)).runner as opened:
        yield opened


def tensor_body(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> tuple[bytes, dict[str, str]]:
    tensor = triton_http.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=True)
    body, json_size = triton_http.InferenceServerClient.generate_request_body([tensor])
    return body, {"Inference-Header-Content-Length": str(json_size)}


def image_body(data: bytes) -> tuple[bytes, dict[str, str]]:
    return tensor_body(np.array([[data]], dtype=object), name="image", datatype="BYTES")


def answer(status: int, body: bytes, headers: dict[str, str], output: str) -> np.ndarray:
    assert status == 200, body[:300]
    length = headers.get("Inference-Header-Content-Length")
    result = triton_http.InferenceServerClient.parse_response_body(
        body, header_length=int(length) if length else None)
    return np.asarray(result.as_numpy(output))


def encoded(height: int, width: int, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def masks_agree(mask: np.ndarray, logits: np.ndarray, size: tuple[int, int]) -> bool:
    """The served class map equals the Runner's, except where the Runner's own top two scores tie within
    float noise (a batched inference may order such a pixel either way)."""
    expected = prediction_at_size(logits, "segmentation", 4, size)
    top2 = np.sort(logits, axis=0)[-2:]
    near_tie = prediction_at_size((top2[1] - top2[0] < 1e-4)[None].astype(np.float32) - 0.5,
                                  "segmentation", 1, size).astype(bool)
    return mask.shape == size and mask.dtype == np.uint8 and bool(np.all((mask == expected) | near_tie))


def test_500_mixed_requests_from_16_clients_all_equal_the_runner(server: Server, runner: Any) -> None:
    shapes = [(1, 3, 32, 32), (1, 3, 24, 40), (2, 3, 32, 32), (1, 3, 48, 16)]
    images = [encoded(37, 53, "PNG", 1), encoded(64, 48, "JPEG", 2), encoded(20, 20, "PNG", 3)]
    rng = np.random.default_rng(0)
    tensors = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]

    def one(index: int) -> str:
        if index % 3 == 2:
            data = images[index % len(images)]
            mask = answer(*server.post("seg_image", *image_body(data)), "mask")[0]
            rgb = decode_image(data)
            logits = runner.infer({"input": preprocess(rgb, load_pre(server), SIZE)})["output"][0]
            return "" if masks_agree(mask, logits, rgb.shape[:2]) else f"image {index} differs"
        x = tensors[index % len(tensors)]
        got = answer(*server.post("seg", *tensor_body(x)), "output")
        expected = runner.infer({"input": x})["output"]
        return "" if got.shape == expected.shape and np.allclose(got, expected, rtol=1e-5, atol=1e-5) else \
            f"tensor {index} differs"

    with ThreadPoolExecutor(16) as pool:
        failures = [f for f in pool.map(one, range(500)) if f]
    assert not failures, failures[:5]
    stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v2/models/seg/stats").read())
    batches = {b["batch_size"] for b in stats["model_stats"][0]["batch_stats"]}
    assert max(batches) > 1, f"the dynamic batcher never merged requests: {batches}"


def load_pre(server: Server) -> Any:
    meta = read_metadata(onnx.load(str(server.artifact)))
    assert meta is not None
    return meta.preprocessing


BAD = {
    "wrong dtype": ("seg", lambda: tensor_body(np.zeros((1, 3, 8, 8), np.int32), datatype="INT32"), "data-type"),
    "wrong shape": ("seg", lambda: tensor_body(np.zeros((1, 2, 8, 8), np.float32)), "shape"),
    "wrong name": ("seg", lambda: tensor_body(np.zeros((1, 3, 8, 8), np.float32), name="pixels"), "pixels"),
    "corrupt image": ("seg_image", lambda: image_body(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), "cannot read image"),
    "oversize image": ("seg_image", lambda: image_body(encoded(200, 200, "PNG", 4)), "at most"),
    "oversize tensor": ("seg", lambda: tensor_body(np.zeros((1, 3, 320, 320), np.float32)), "too large"),
    "zero-sized dimension": ("seg", lambda: tensor_body(np.zeros((1, 3, 0, 8), np.float32)), "[1, 3, 0, 8]"),
    "NaN": ("seg", lambda: tensor_body(np.full((1, 3, 4, 4), np.nan, np.float32)), "input has 48 of 48"),
    "infinities": ("seg", lambda: tensor_body(np.where(np.eye(4, dtype=bool), np.inf, 0).astype(np.float32)
                                              [None, None].repeat(3, 1)), "input has 12 of 48"),
    "images of two sizes": ("seg_image", lambda: tensor_body(np.array([[encoded(9, 7, "PNG", 8)],
                                                                       [encoded(7, 9, "PNG", 8)]], dtype=object),
                                                             name="image", datatype="BYTES"), "9x7, 7x9"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(server: Server, runner: Any,
                                                                         case: str) -> None:
    model, make, words = BAD[case]
    status, body, _ = server.post(model, *make())
    assert 400 <= status < 500, (status, body[:300])
    assert words in json.loads(body)["error"]
    x = np.ones((1, 3, 16, 16), np.float32)
    np.testing.assert_allclose(answer(*server.post("seg", *tensor_body(x)), "output"),
                               runner.infer({"input": x})["output"], rtol=1e-5, atol=1e-5)


def test_protocol_endpoints(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    assert urllib.request.urlopen(f"{base}/v2/health/ready").status == 200
    meta = json.loads(urllib.request.urlopen(f"{base}/v2/models/seg").read())
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("input", "FP32", [-1, 3, -1, -1])]
    image = json.loads(urllib.request.urlopen(f"{base}/v2/models/seg_image").read())
    assert image["inputs"][0]["datatype"] == "BYTES" and image["outputs"][0]["datatype"] == "UINT8"
    body = {"inputs": [{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.5] * 12}]}
    request = urllib.request.Request(f"{base}/v2/models/seg/infer", data=json.dumps(body).encode())
    reply = json.loads(urllib.request.urlopen(request).read())  # plain JSON, no binary extension
    assert reply["outputs"][0]["shape"] == [1, 4, 2, 2] and len(reply["outputs"][0]["data"]) == 16


def test_sigterm_drains_in_flight_requests_and_exits_within_10_s(artifact: Path) -> None:
    draining = start_server([artifact], "--max-input-mb", "16")
    x = np.random.default_rng(1).standard_normal((1, 3, 256, 256), dtype=np.float32)
    body = tensor_body(x)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(draining.post, "seg", *body) for _ in range(8)]
        time.sleep(0.3)  # the requests are in flight
        sent = time.monotonic()
        draining.process.send_signal(signal.SIGTERM)
        statuses = [f.result()[0] for f in futures]
    code = draining.process.wait(15)
    assert time.monotonic() - sent < 10
    assert code == 0, draining.process.stdout.read().decode() if draining.process.stdout else ""
    assert statuses == [200] * 8
    assert os.path.exists(artifact)


def test_a_request_still_sending_its_body_at_sigterm_is_answered_and_the_exit_is_clean(artifact: Path,
                                                                                       runner: Any) -> None:
    """aiohttp's shutdown stops reading every connection: a request whose body was still arriving hung for the
    whole --drain, was cut off (the client saw the connection close) and serve exited 1 saying requests were cut
    off; under load, a request that raced the SIGTERM did the same."""
    draining = start_server([artifact], "--drain", "3", "--no-images")
    x = np.random.default_rng(15).standard_normal((1, 3, 64, 64), dtype=np.float32)
    body, headers = tensor_body(x)
    half = len(body) // 2
    with socket.create_connection(("127.0.0.1", draining.port), timeout=30) as connection:
        head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(body))}.items())
        connection.sendall(f"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body[:half])
        time.sleep(0.5)  # the front is reading the body
        draining.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the front is stopping
        sent = time.monotonic()
        connection.sendall(body[half:])
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        got = answer(reply.status, reply.read(), dict(reply.getheaders()), "output")
        assert time.monotonic() - sent < 2.5  # answered, not held until the drain ran out
    code = draining.process.wait(60)
    said = draining.process.stdout.read().decode() if draining.process.stdout else ""
    np.testing.assert_allclose(got, runner.infer({"input": x})["output"], rtol=1e-5, atol=1e-5)
    assert code == 0, said


def test_sigterm_with_the_shortest_drain_and_nothing_in_flight_exits_0(artifact: Path) -> None:
    """Triton's exit timeout was --drain, and unloading its models alone takes about 3 s: --drain 1 exited 1,
    "requests still in flight were cut off", with no request ever sent."""
    served = start_server([artifact], "--drain", "1", "--no-images")
    served.process.send_signal(signal.SIGTERM)
    code = served.process.wait(60)
    assert code == 0, served.process.stdout.read().decode() if served.process.stdout else ""


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_sighup_and_sigquit_drain_and_stop_as_sigterm_does(sig: int, artifact: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`kill -HUP` (a terminal or SSH session that closes) ended serve where it stood: exit 129 and no word,
    Triton's Python stubs still running from the repository staged in $TMPDIR, which stayed; SIGQUIT the same
    with a core dump. Both now drain and stop as SIGTERM does."""
    from tests.io.faults import THIRD_PARTY_TMP

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    served = start_server([artifact], "--drain", "1", "--no-images")
    served.process.send_signal(sig)
    code = served.process.wait(60)
    assert code == 0, served.process.stdout.read().decode() if served.process.stdout else ""
    assert not [p.name for p in tmp_path.iterdir() if p.name not in THIRD_PARTY_TMP]
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_holds(pid, str(tmp_path))]
    assert not left, "Triton or its stubs outlived serve"


def _cmdline_holds(pid: str, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it ended meanwhile
        return False


def test_bench_url_measures_the_served_model(server: Server, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deploykit.bench.run import BenchReport
    from deploykit.cli import cli

    out = tmp_path / "served.json"
    result = CliRunner().invoke(cli, ["bench", "--url", f"http://127.0.0.1:{server.port}", "--model", "seg",
                                      "--input-shape", "1,3,32,32", "--concurrency", "1,4", "--duration", "0.5",
                                      "--warmup", "0.2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "infer/s" in result.output and "server batches" in result.output
    report = BenchReport.from_dict(json.loads(out.read_text()))
    assert [r.concurrency for r in report.results] == [1, 4]
    for r in report.results:
        assert r.errors == 0 and r.latency.count == len(r.samples_ms) > 0
        # the server's own count of the level's executions (the snapshot at the end of the warm-up may come
        # a few requests late on a busy machine, so no equality with the client's count)
        sizes = [b["batch_size"] for b in r.server_batches if b["model"] == "seg" and b["executions"] > 0]
        assert sizes and max(sizes) <= 8


@pytest.mark.parametrize("name", ["seg_q", "seg_ov"])
def test_an_artifact_of_each_cpu_backend_is_served_through_its_runner(server: Server, built: dict[str, Path],
                                                                      name: str) -> None:
    if name not in built:
        pytest.skip("OpenVINO is not installed")
    x = np.random.default_rng(5).standard_normal((2, 3, 24, 32), dtype=np.float32)
    with open_target(str(built[name])).runner as built_runner:
        expected = built_runner.infer({"input": x})["output"]
    got = answer(*server.post(name, *tensor_body(x)), "output")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    data = encoded(30, 41, "PNG", 6)
    assert answer(*server.post(f"{name}_image", *image_body(data)), "mask").shape == (1, 30, 41)


def test_bench_url_json_requests_and_images(server: Server, tmp_path: Path) -> None:
    from deploykit.bench.remote import LoadConfig, run_remote_bench

    config = LoadConfig(concurrency=(2,), duration_s=0.5, warmup_s=0.1)
    url = f"http://127.0.0.1:{server.port}"
    tensors = run_remote_bench(url, "seg", config=config, input_shape=(1, 3, 16, 16), binary=False)
    image = tmp_path / "small.png"
    image.write_bytes(encoded(40, 30, "PNG", 7))  # under the test server's --max-image-mb
    images = run_remote_bench(url, "seg_image", config=config, image=image)
    for report in (tensors, images):
        result = report.results[0]
        assert result.errors == 0 and result.latency.count > 0 and result.concurrency == 2
    assert tensors.config["binary"] is False and images.results[0].input_shape == (1, 1)
    assert {b["model"] for b in images.results[0].server_batches} >= {"seg_pre", "seg", "seg_post"}



def test_a_signal_while_the_server_starts_leaves_no_server_and_no_files(artifact: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (raised as Terminated) before the models are ready: the Triton process, which runs in its own
    session that our signal does not reach, is stopped with us, and the staged repository is gone."""
    import tempfile

    from deploykit.errors import Terminated
    from deploykit.serve import engine, server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started: list[engine.ServerProcess] = []

    def signalled(self: engine.ServerProcess) -> None:
        started.append(self)
        raise Terminated()

    monkeypatch.setattr(engine.ServerProcess, "wait_ready", signalled)
    with pytest.raises(Terminated):
        server.start([str(artifact)], server.ServeOptions(port=0, drain_s=1))
    assert started and started[0].process.poll() is not None, "a Triton server outlived the command"
    assert not list(tmp_path.iterdir())


def test_a_signal_while_serve_prints_its_endpoints_stops_the_server_and_removes_its_files(
        artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM after the server is ready but before serve listens for signals (while it prints the endpoints):
    Triton, its stubs and the staged repository outlived the command."""
    import tempfile

    import click
    from click.testing import CliRunner

    from deploykit.cli import cli
    from deploykit.errors import Terminated
    from deploykit.serve import engine, server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started: list[engine.ServerProcess] = []

    def recorded(*args: Any) -> engine.ServerProcess:
        started.append(engine.start_server(*args))
        return started[-1]

    def signalled(*_args: Any, **_kwargs: Any) -> None:
        raise Terminated()

    monkeypatch.setattr(server, "start_server", recorded)
    monkeypatch.setattr(click, "echo", signalled)
    result = CliRunner().invoke(cli, ["serve", str(artifact), "--port", "0", "--drain", "1"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output  # click: "Aborted!"
    assert started and started[0].process.poll() is not None, "a Triton server outlived the command"
    assert not list(tmp_path.iterdir())


def test_a_1_channel_model_answers_tensors_over_grpc_and_has_no_image_model(server: Server,
                                                                           gray_artifact: Path) -> None:
    import tritonclient.grpc as triton_grpc

    x = np.random.default_rng(9).standard_normal((2, 1, 20, 28), dtype=np.float32)
    tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    got = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}").infer("gray", [tensor])
    with open_target(str(gray_artifact)).runner as gray_runner:
        np.testing.assert_allclose(got.as_numpy("output"), gray_runner.infer({"input": x})["output"],
                                   rtol=1e-5, atol=1e-5)
    status, body, _ = server.post("gray_image", *image_body(encoded(20, 20, "PNG", 10)))
    assert status == 404 and "gray_image" in json.loads(body)["error"]  # not a model that fails every request


def test_an_exif_rotated_jpeg_gets_the_mask_of_the_displayed_image(server: Server, runner: Any) -> None:
    stored = Image.fromarray((np.random.default_rng(11).random((30, 50, 3)) * 255).astype(np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6  # displayed turned a quarter: 50 high, 30 wide
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes())
    mask = answer(*server.post("seg_image", *image_body(buffer.getvalue())), "mask")[0]
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB"))
    logits = runner.infer({"input": preprocess(shown, load_pre(server), SIZE)})["output"][0]
    assert shown.shape[:2] == (50, 30) and masks_agree(mask, logits, (50, 30))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(0, 10), channels=st.sampled_from([1, 3, 4]), height=st.integers(0, 40),
       width=st.integers(0, 40), json_data=st.booleans(), seed=st.integers(0, 2**16))
def test_any_tensor_request_is_answered_like_the_runner_or_refused_with_a_reason(
        server: Server, runner: Any, batch: int, channels: int, height: int, width: int, json_data: bool,
        seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((batch, channels, height, width), dtype=np.float32)
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=not json_data)
    body, json_size = triton_http.InferenceServerClient.generate_request_body([tensor])
    status, reply, headers = server.post("seg", body, {"Inference-Header-Content-Length": str(json_size)}
                                         if json_size else {})
    if 1 <= batch <= 8 and channels == 3 and height > 0 and width > 0:
        np.testing.assert_allclose(answer(status, reply, headers, "output"), runner.infer({"input": x})["output"],
                                   rtol=1e-5, atol=1e-5)
    else:
        assert 400 <= status < 500 and json.loads(reply)["error"], (status, reply[:300])


def _children(pid: int) -> list[int]:
    return [int(child) for children in Path(f"/proc/{pid}/task").glob("*/children")
            for child in children.read_text().split()]


def test_a_model_whose_python_stub_dies_ends_serve_naming_it(artifact: Path) -> None:
    """Triton neither restarts a model's Python stub that died (here killed; out of memory alike) nor stops being
    ready: serve went on answering that model's every request with 500 "Stub process 'seg_0_0' is not healthy",
    and at SIGTERM waited Triton's whole exit timeout to say "did not drain within --drain ... give a longer
    --drain". It ends, naming the model (exit status 2), and the drain is not blamed."""
    served = start_server([artifact], "--drain", "1", "--no-images")
    try:
        triton, = _children(served.process.pid)
        stub, = (pid for pid in _children(triton) if b"/models/seg/1/model.py" in Path(f"/proc/{pid}/cmdline")
                 .read_bytes())
        os.kill(stub, signal.SIGKILL)
        code = served.process.wait(40)
    finally:
        if served.process.poll() is None:
            served.process.kill()
    said = served.process.stdout.read().decode() if served.process.stdout else ""
    assert code == 2, said
    assert "the Python stub of model seg ended while serving" in said
    assert "drain" not in said.split("ready:")[-1].replace("drains and stops", "")


def test_a_busy_or_shared_port_an_unknown_host_or_no_drain_is_refused_in_one_line_naming_it(artifact: Path) -> None:
    from click.testing import CliRunner

    from deploykit.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        result = CliRunner().invoke(cli, ["serve", str(artifact), "--port", "0", "--grpc-port", taken])
    assert result.exit_code == 2 and "choose another --grpc-port" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["serve", str(artifact), "--port", taken, "--grpc-port", taken])
    assert result.exit_code == 2 and "a port each" in result.output, result.output  # not Triton's usage text
    result = CliRunner().invoke(cli, ["serve", str(artifact), "--host", "no-such-host.invalid"])
    assert result.exit_code == 2 and "is not an address of this machine" in result.output, result.output
    result = CliRunner().invoke(cli, ["serve", str(artifact), "--drain", "0"])
    assert result.exit_code == 2 and "Invalid value for '--drain'" in result.output, result.output


def test_a_max_input_beyond_memory_is_refused_before_the_server_starts(artifact: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-input-mb 1e300 started a server that any JSON request declaring a 3e10-value input ended (Triton
    allocates a declared input before any model runs)."""
    from click.testing import CliRunner

    from deploykit.cli import cli
    from deploykit.serve import server

    def started() -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr(server, "find_bundle", started)
    result = CliRunner().invoke(cli, ["serve", str(artifact), "--max-input-mb", "1e300"])
    assert result.exit_code == 2 and "this machine has" in result.output and "--max-input-mb" in result.output, \
        result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_ipv6_host_serves_http_and_grpc_through_the_fronts(artifact: Path) -> None:
    """--host ::1 is the fronts' address (Triton itself listens on private IPv4 loopback ports): both answer over
    IPv6 with the model's outputs, and the ready line writes the address in brackets."""
    import tritonclient.grpc as triton_grpc

    served = start_server([artifact], "--name=seg", "--no-images", grpc=True, host="::1")
    try:
        x = np.random.default_rng(21).standard_normal((1, 3, 16, 24), dtype=np.float32)
        with open_target(str(artifact)).runner as runner:
            expected = runner.infer({"input": x})["output"]
        np.testing.assert_allclose(answer(*served.post("seg", *tensor_body(x)), "output"), expected,
                                   rtol=1e-5, atol=1e-5)
        tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client = triton_grpc.InferenceServerClient(f"[::1]:{served.grpc_port}")
        np.testing.assert_allclose(client.infer("seg", [tensor]).as_numpy("output"), expected, rtol=1e-5, atol=1e-5)
    finally:
        served.process.send_signal(signal.SIGTERM)
        said = served.process.communicate(timeout=60)[0].decode()
    assert f"ready: http://[::1]:{served.port} " in said and f"gRPC on [::1]:{served.grpc_port}" in said, said


def test_http_answers_ready_only_once_the_grpc_endpoint_listens(artifact: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients wait for /v2/health/ready, then call gRPC: while the gRPC front is still getting ready (slow on a busy
    machine; here a second), the HTTP port must not answer yet (CI saw 'connection refused' on gRPC after ready)."""
    from deploykit.serve import grpc_front, server

    http_port, grpc_port = _free_ports(2)
    http_answered: list[bool] = []
    listen = grpc_front.GrpcFront.start

    def slow_start(self: grpc_front.GrpcFront, host: str, port: int) -> None:
        time.sleep(1)
        with socket.socket() as probe:
            http_answered.append(probe.connect_ex(("127.0.0.1", http_port)) == 0)
        listen(self, host, port)

    monkeypatch.setattr(grpc_front.GrpcFront, "start", slow_start)
    said: list[str] = []
    serving = server.start([str(artifact)], server.ServeOptions(port=http_port, grpc_port=grpc_port, drain_s=1),
                           said.append)
    try:
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=5):
            pass
        private = serving.process.settings  # the progress line names Triton's own ports (bench_serve_front.py)
        assert f"private HTTP port 127.0.0.1:{private.http_port} and gRPC port {private.grpc_port}" in said[0], said
    finally:
        serving.stop()
    assert http_answered == [False]


@pytest.mark.slow
def test_ctrl_c_drains_in_flight_requests_then_refuses_new_connections(artifact: Path) -> None:
    draining = start_server([artifact], "--max-input-mb", "16", "--max-batch", "0")
    body = tensor_body(np.random.default_rng(12).standard_normal((1, 3, 320, 320), dtype=np.float32))
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(draining.post, "seg", *body) for _ in range(6)]
        time.sleep(0.5)  # the requests are in flight
        draining.process.send_signal(signal.SIGINT)
        late: list[int | str] = []  # until the server stops listening, new requests are answered in full or
        while not late or late[-1] != "refused":  # dropped at the connection (a reset while it closes), no 5xx
            try:
                late.append(draining.post("seg", *body)[0])
            except ConnectionRefusedError:
                late.append("refused")
            except ConnectionError:
                late.append("reset")
        statuses = [f.result()[0] for f in futures]
    assert draining.process.wait(30) == 0
    assert statuses == [200] * 6 and set(late) <= {200, "reset", "refused"}, (statuses, late)


def test_tensor_names_with_quotes_backslashes_and_newlines_are_served_as_the_model_names_them(
        server: Server, runner: Any) -> None:
    x = np.random.default_rng(13).standard_normal((2, 3, 20, 12), dtype=np.float32)
    got = answer(*server.post("odd", *tensor_body(x, name=ODD_NAMES["input"])), ODD_NAMES["output"])
    np.testing.assert_allclose(got, runner.infer({"input": x})["output"], rtol=1e-5, atol=1e-5)
    mask = answer(*server.post("odd_image", *image_body(encoded(21, 17, "PNG", 14))), "mask")
    assert mask.shape == (1, 21, 17)


def _tree(pid: int) -> list[int]:
    """Process `pid` and its descendants (Triton runs in a session of its own, its stubs under it)."""
    return [pid, *(descendant for child in _children(pid) for descendant in _tree(child))]


def _regions(serve: Server) -> set[str]:
    return {region.name for region in Path("/dev/shm").glob(f"deploykit-{serve.process.pid}-*")}


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm: shared memory is not a folder here")
def test_a_serve_killed_outright_leaves_shared_memory_that_the_next_serve_removes(artifact: Path) -> None:
    """A serve killed with its server and stubs at once (the OOM killer, a container's or a unit's SIGKILL) left
    its Python stubs' shared-memory regions (1 MiB+ each, in RAM) in /dev/shm for good: none was deploykit's to
    recognise. Each serve names them after its own pid, and a serve starting removes those of serves that no
    longer run; a running serve's and other programs' regions stay."""
    foreign = Path("/dev/shm") / "triton_python_backend_shm_region_deploykit-test"  # another user's Triton
    foreign.write_bytes(b"")
    killed, running = start_server([artifact], "--no-images"), start_server([artifact], "--no-images")
    try:
        leaked, kept = _regions(killed), _regions(running)
        assert leaked and kept, "the serves' shared-memory regions do not name them"
        for pid in reversed(_tree(killed.process.pid)):  # the stubs first: they clean up after a dead parent
            os.kill(pid, signal.SIGKILL)
        killed.process.wait(10)
        assert _regions(killed) == leaked  # the stubs, killed too, removed nothing
        later = start_server([artifact], "--no-images")
        later.process.send_signal(signal.SIGTERM)
        assert later.process.wait(30) == 0
        assert not _regions(killed) and _regions(running) == kept and foreign.exists()
    finally:
        foreign.unlink()
        for serve in (killed, running):
            if serve.process.poll() is None:
                serve.process.send_signal(signal.SIGTERM)
                serve.process.wait(30)
