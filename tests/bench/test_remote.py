"""bench --url's pieces that need no server: endpoints, request shapes, bodies, the server's batch counts,
and the command's argument checks. (tests/serve runs it against the real server.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from deploykit.bench.remote import Endpoint, batch_difference, make_bodies, resolve_shape
from deploykit.cli import cli
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
