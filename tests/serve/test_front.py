"""deploykit serve's HTTP front against hostile requests, on the real server: requests that took the bundled
Triton down (the whole server, or one model's Python stub for good) get a 4xx naming what was wrong, and the
model answers correctly afterwards."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import re
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.serve.front import why_refused
from deploykit.targets.resolve import open_target
from deploykit.zoo.sources import load_model
from tests.serve.test_server import Server, answer, start_server, tensor_body  # skips without the bundled server

USER = "tests.fixtures.user_models:tiny_segmenter"
MAX_ELEMENTS = 2**20 // 4  # --max-input-mb 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    path = tmp_path_factory.mktemp("front") / "seg.onnx"
    onnx_from_torch(load_model(USER, options={"num_classes": 4}), path, input_shape=(1, 3, 32, 32), simplify=False)
    running = start_server([path], "--name=seg", "--no-images", grpc=True)
    with open_target(str(path)).runner as runner:
        yield running, runner
    running.process.send_signal(signal.SIGTERM)
    running.process.wait(30)


def json_body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def binary_header(shape: list[int], size: int) -> tuple[bytes, dict[str, str]]:
    header = json_body([{"name": "input", "shape": shape, "datatype": "FP32",
                         "parameters": {"binary_data_size": size}}])
    return header + bytes(size), {"Inference-Header-Content-Length": str(len(header))}


def spaces_bomb() -> bytes:
    """A 50 MB JSON request (mostly spaces) gzipped to about 50 kB."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as sink:
        sink.write(json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 3]}])[:-1])
        for _ in range(50):
            sink.write(b" " * 2**20)
        sink.write(b"}")
    return buffer.getvalue()


HOSTILE = {  # what Triton 2.51's own front end did with each: see deploykit/serve/front.py
    "a JSON shape of 3e10 values (Triton aborted)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 100000, 100000], "datatype": "FP32",
                             "data": [0.5] * 12}]), {}), 400, "too large"),
    "a shape whose byte size overflows to 0, with 0 bytes (the model's stub died for good)": (
        lambda: binary_header([2, 3, 2**62, 4], 0), 400, "too large"),
    "the same in JSON": (
        lambda: (json_body([{"name": "input", "shape": [2, 3, 2**62, 4], "datatype": "FP32", "data": []}]), {}),
        400, "too large"),
    "an empty shape whose other dimensions span 2**63 values, with 0 bytes (the model's stub died for good)": (
        lambda: binary_header([1, 3, 0, 2**62], 0), 400, "other dimensions span"),
    "the empty one in JSON": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 0, 2**62], "datatype": "FP32", "data": []}]), {}),
        400, "other dimensions span"),
    "a gzip body inflating past the limit (Triton inflated 3 GB and aborted)": (
        lambda: (spaces_bomb(), {"Content-Encoding": "gzip"}), 413, "larger than"),
    "a body that is not JSON (Triton: 500)": (lambda: (b"{\"inputs\": [", {}), 400, "not valid JSON"),
    "no inputs list (Triton: 500)": (lambda: (b"{}", {}), 400, "`inputs` list"),
    "data that does not fill its shape (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.5] * 5}]),
                 {}), 400, "holds 5 values"),
    "strings as FP32 data (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": ["a"] * 3}]),
                 {}), 400, "must hold numbers"),
    "a negative dimension (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, -2, 2], "datatype": "FP32", "data": [0.5] * 12}]),
                 {}), 400, "whole numbers >= 0"),
    "a parameter of the wrong type (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 3]}],
                           parameters={"binary_data_output": "yes"}), {}), 400, "true or false"),
    "a header length past the body": (
        lambda: (b"{}", {"Inference-Header-Content-Length": "999"}), 400, "body has 2 bytes"),
    # Where Python's json and Triton's RapidJSON read the same bytes differently:
    "two `shape` keys, the first of 3e10 values (Triton read the first and aborted)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 100000, 100000], "datatype": "FP32",
                             "data": [0.5] * 12}]).replace(b'"datatype"', b'"shape": [1, 3, 2, 2], "datatype"'),
                 {}), 400, "appears twice"),
    "a number beyond a double (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 0]}])
                 .replace(b"0]", b"1e400]"), {}), 400, "beyond a double"),
    "a lone surrogate (Triton: 500)": (
        lambda: (json_body([{"name": "input\ud800", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 3]}]),
                 {}), 400, "lone UTF-16 surrogate"),
    "a UTF-16 body (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 3]}])
                 .decode().encode("utf-16"), {}), 400, "not valid JSON"),
    "a number as `id` (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 3]}],
                           id=7), {}), 400, "`id` must be a string"),
    "booleans in FP32 data (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [True] * 3}]),
                 {}), 400, "must hold numbers"),
    "a negative priority (Triton: 500)": (
        lambda: (json_body([{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 3]}],
                           parameters={"priority": -1}), {}), 400, "priority of the request"),
}


def good_request_matches(server: Server, runner: Any) -> None:
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(answer(*server.post("seg", *tensor_body(x)), "output"),
                               runner.infer({"input": x})["output"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_requests_that_took_triton_down_get_4xx_naming_the_fault_and_the_model_still_answers(
        served: tuple[Server, Any], case: str) -> None:
    server, runner = served
    make, expected_status, words = HOSTILE[case]
    status, body, _ = server.post("seg", *make())
    assert status == expected_status and words in json.loads(body)["error"], (status, body[:300])
    good_request_matches(server, runner)


_dims = st.one_of(st.integers(0, 40), st.integers(0, 2**64), st.integers(-3, -1))
_values = st.lists(st.floats(allow_nan=False, width=32), max_size=64)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(_dims, min_size=0, max_size=5), data=st.one_of(st.none(), _values),
       binary_size=st.one_of(st.none(), st.integers(0, 256)), datatype=st.sampled_from(["FP32", "INT64", "BYTES"]))
def test_any_inference_header_is_answered_or_refused_and_never_breaks_the_server(
        served: tuple[Server, Any], shape: list[int], data: list[float] | None, binary_size: int | None,
        datatype: str) -> None:
    server, runner = served
    tensor: dict[str, Any] = {"name": "input", "shape": shape, "datatype": datatype}
    if data is not None:
        tensor["data"] = data
    headers = {}
    body = json_body([tensor])
    if binary_size is not None:
        tensor["parameters"] = {"binary_data_size": binary_size}
        header = json_body([tensor])
        body, headers = header + bytes(binary_size), {"Inference-Header-Content-Length": str(len(header))}
    try:
        status, reply, _ = server.post("seg", body, headers)
    except http.client.HTTPException as exc:
        raise AssertionError(f"no answer to {body[:200]!r}") from exc
    assert status == 200 or (400 <= status < 500 and json.loads(reply)["error"]), (status, reply[:300])
    good_request_matches(server, runner)


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                          st.text(max_size=4), st.sampled_from(["\ud800", "x\udfff"]))
_DATATYPES = ["BOOL", "UINT8", "UINT64", "INT8", "INT32", "INT64", "FP32", "FP64", "BYTES"]
_TYPED = {"id": (), "sequence_id": ("parameters",), "sequence_start": ("parameters",), "priority": ("parameters",),
          "timeout": ("parameters",), "binary_data_output": ("parameters",), "classification": ("outputs",),
          "binary_data": ("outputs",), "binary_data_size": ("inputs",), "shared_memory_offset": ("inputs",)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(datatype=st.sampled_from(_DATATYPES), values=st.lists(_json_scalars, min_size=12, max_size=12),
       fields=st.dictionaries(st.sampled_from(list(_TYPED)), _json_scalars, max_size=3))
def test_any_json_type_in_a_field_triton_reads_typed_gets_an_answer_or_a_4xx(
        served: tuple[Server, Any], datatype: str, values: list[Any], fields: dict[str, Any]) -> None:
    """Triton answered a field of the wrong JSON type (a string `priority`, a boolean in FP32 `data`, a fraction
    in INT64 `data`, a lone surrogate, a number beyond a double) with 500."""
    server, runner = served
    tensor: dict[str, Any] = {"name": "input", "shape": [1, 3, 2, 2], "datatype": datatype, "data": values}
    request: dict[str, Any] = {"inputs": [tensor]}
    for key, value in fields.items():
        where = _TYPED[key]
        if not where:
            request[key] = value
        elif where == ("parameters",):
            request.setdefault("parameters", {})[key] = value
        elif where == ("outputs",):
            request["outputs"] = [{"name": "output", "parameters": {key: value}}]
        else:
            tensor.setdefault("parameters", {})[key] = value
    body = json.dumps(request).encode().replace(b"Infinity", b"1e999")  # what a client's float overflow sends
    status, reply, _ = server.post("seg", body, {})
    assert status == 200 or (400 <= status < 500 and json.loads(reply)["error"]), (status, reply[:300], body[:300])
    good_request_matches(server, runner)


@given(shape=st.lists(st.integers(0, 2**70), min_size=1, max_size=6))
def test_a_shape_beyond_the_limit_is_refused_whatever_its_product_wraps_to(shape: list[int]) -> None:
    """Also when a 0 dimension makes it empty: its other dimensions are held to the limit."""
    header = json_body([{"name": "input", "shape": shape, "datatype": "FP32"}])
    reason = why_refused(header, None, MAX_ELEMENTS)
    spanned = int(np.prod([d for d in shape if d], dtype=object))
    assert (reason is not None and "too large" in reason) == (spanned > MAX_ELEMENTS)


@pytest.mark.parametrize("shape", [[2] * 20_000, [10**300] * 20])
def test_a_shape_whose_count_python_will_not_write_is_refused_in_words(shape: list[int]) -> None:
    """Python writes no integer of more than 4300 digits: the front's message raised ValueError (HTTP: 500)."""
    reason = why_refused(json_body([{"name": "input", "shape": shape, "datatype": "FP32"}]), None, MAX_ELEMENTS)
    assert reason is not None and "too large" in reason and len(reason) < 8192, reason


def test_a_grpc_shape_that_killed_the_models_stub_is_refused_and_the_model_still_answers(
        served: tuple[Server, Any]) -> None:
    """Triton's gRPC endpoint had the same hole: a ModelInfer input whose byte size wraps to 0, with 0 bytes."""
    import grpc
    import tritonclient.grpc as triton_grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server, runner = served
    request = service_pb2.ModelInferRequest(model_name="seg")
    tensor = request.inputs.add(name="input", datatype="FP32")
    tensor.shape.extend([2, 3, 2**62, 4])
    request.raw_input_contents.append(b"")
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel, pytest.raises(grpc.RpcError) as refused:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "too large" in str(refused.value.details())
    x = np.random.default_rng(4).standard_normal((2, 3, 12, 20), dtype=np.float32)
    good = triton_grpc.InferInput("input", list(x.shape), "FP32")
    good.set_data_from_numpy(x)
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert client.is_server_ready()
    np.testing.assert_allclose(client.infer("seg", [good]).as_numpy("output"), runner.infer({"input": x})["output"],
                               rtol=1e-5, atol=1e-5)
    good_request_matches(server, runner)


def test_a_refused_message_in_a_grpc_stream_gets_its_error_and_the_stream_goes_on(served: tuple[Server, Any]) -> None:
    """The front ended the stream at the first refused message: the requests after it got no answer."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server, runner = served
    xs = [np.random.default_rng(i).standard_normal((1, 3, 8, 8 + 4 * i), dtype=np.float32) for i in range(4)]
    requests = []
    for i, x in enumerate(xs):
        request = service_pb2.ModelInferRequest(model_name="seg", id=str(i))
        tensor = request.inputs.add(name="input", datatype="FP32")
        tensor.shape.extend([2, 3, 2**62, 4] if i == 1 else x.shape)
        request.raw_input_contents.append(b"" if i == 1 else x.tobytes())
        requests.append(request)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answers = list(service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter(requests), timeout=60))
    errors = {a.infer_response.id: a.error_message for a in answers if a.error_message}
    results = {a.infer_response.id: a.infer_response for a in answers if not a.error_message}
    assert list(errors) == ["1"] and "too large" in errors["1"] and sorted(results) == ["0", "2", "3"]
    for i in (0, 2, 3):
        got = np.frombuffer(results[str(i)].raw_output_contents[0], np.float32)
        np.testing.assert_allclose(got.reshape(results[str(i)].outputs[0].shape),
                                   runner.infer({"input": xs[i]})["output"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("accepted", [None, "gzip"])
def test_an_answer_is_compressed_only_when_the_client_asks(served: tuple[Server, Any], accepted: str | None) -> None:
    """The front's own HTTP client asked Triton for gzip: curl, which sends no Accept-Encoding, got gzip bytes."""
    server, runner = served
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8), dtype=np.float32)
    body = json_body([{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.putrequest("POST", "/v2/models/seg/infer", skip_accept_encoding=True)  # as curl sends it
    for key, value in {"Content-Length": str(len(body)), **({"Accept-Encoding": accepted} if accepted else {})}.items():
        connection.putheader(key, value)
    connection.endheaders(body)
    reply = connection.getresponse()
    data = reply.read()
    assert reply.status == 200 and reply.getheader("Content-Encoding") == accepted
    got = json.loads(gzip.decompress(data) if accepted else data)["outputs"][0]
    np.testing.assert_allclose(np.reshape(got["data"], got["shape"]), runner.infer({"input": x})["output"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_a_method_kserve_does_not_have_gets_405_not_a_5xx(served: tuple[Server, Any], method: str) -> None:
    """Triton answered HEAD /v2/health/ready with a 405 that carried a body, which the front read as a broken
    connection (503)."""
    server, runner = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request(method, "/v2/health/ready")
    reply = connection.getresponse()
    assert reply.status == 405, (reply.status, reply.read()[:200])
    good_request_matches(server, runner)


def test_a_body_or_request_line_the_client_got_wrong_gets_400_and_no_traceback_in_the_output(
        caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp logged some 30 lines of traceback into serve's output for each such request (a body that does not
    decode as its Content-Encoding says, a request line over 8190 bytes)."""
    import logging

    from deploykit.serve.front import FrontLimits, HttpFront
    from tests.serve.test_server import _free_ports

    port = _free_ports()[0]
    front = HttpFront("http://127.0.0.1:9", FrontLimits(max_elements=MAX_ELEMENTS, max_body_bytes=2**20), 1)
    front.start("127.0.0.1", port)
    statuses = []
    try:
        with caplog.at_level(logging.DEBUG):
            for path, headers in [("/v2/models/seg/infer", {"Content-Encoding": "br"}),
                                  ("/v2/models/seg/infer", {"Content-Encoding": "gzip"}),
                                  ("/v2/models/" + "a" * 9000 + "/infer", {})]:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("POST", path, body=b"not compressed" * 100, headers=headers)
                statuses.append(connection.getresponse().status)
                connection.close()
    finally:
        assert front.stop()
    assert statuses == [400, 400, 400]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(("encoding", "status"), [("compress", 415), ("x-custom", 415), ("gzip, br", 415),
                                                  ("identity", 503), ("GZIP", 400)])
def test_a_body_in_an_encoding_the_server_does_not_read_gets_415(encoding: str, status: int) -> None:
    """Content-Encoding: compress (or any name aiohttp does not decompress) was passed on as it came, for Triton to
    read as JSON. The upstream here is a closed port: a body the front reads and passes gets 503, a gzip body that
    does not decompress 400."""
    from deploykit.serve.front import FrontLimits, HttpFront
    from tests.serve.test_server import _free_ports

    port = _free_ports()[0]
    front = HttpFront("http://127.0.0.1:9", FrontLimits(max_elements=MAX_ELEMENTS, max_body_bytes=2**20), 1)
    front.start("127.0.0.1", port)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/v2/repository/index", body=b"{}", headers={"Content-Encoding": encoding})
        response = connection.getresponse()
        got, body = response.status, response.read()
        connection.close()
    finally:
        assert front.stop()
    assert got == status, body[:300]
    if status == 415:
        assert b"is not one this server reads" in body


def test_a_declared_length_beyond_the_limit_gets_413_at_once() -> None:
    """The front read the body up to its limit before refusing it: a client that declared 1 TB and sent 100 bytes
    waited for an answer that never came."""
    import socket

    from deploykit.serve.front import FrontLimits, HttpFront
    from tests.serve.test_server import _free_ports

    port = _free_ports()[0]
    front = HttpFront("http://127.0.0.1:9", FrontLimits(max_elements=MAX_ELEMENTS, max_body_bytes=2**20), 1)
    front.start("127.0.0.1", port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n"
                               b"\r\n" + b"{" * 100)
            reply = http.client.HTTPResponse(connection)
            reply.begin()  # a timeout here: no answer within 5 s
            assert reply.status == 413 and "larger than" in json.loads(reply.read())["error"]
    finally:
        front.stop()


@pytest.mark.parametrize(("path", "body"), [("/v2/repository/index", b"{"), ("/v2/repository/index", b'{"ready": 1}'),
                                            ("/v2/logging", b'{"log_info": 5}'),
                                            ("/v2/systemsharedmemory/region/r/register", b'{"key": 5}'),
                                            ("/v2/models/seg/generate", b'{"input": [true, false, true]}'),
                                            ("/v2/models/seg/generate", b"[]")])
def test_json_triton_cannot_read_on_another_endpoint_gets_400_not_500(served: tuple[Server, Any], path: str,
                                                                    body: bytes) -> None:
    """Triton's JSON reader reports a body that is not JSON, or a value of another type than it reads, as an
    internal error (500) on the endpoints the front passes unread (generate's words differ: "Unable to parse
    'data': attempt to access JSON non-number as double", "attempt to get members for non-object")."""
    server, runner = served
    for accepted in ({}, {"Accept-Encoding": "gzip"}):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("POST", path, body=body, headers=accepted)
        reply = connection.getresponse()
        data = reply.read()
        error = json.loads(gzip.decompress(data) if reply.getheader("Content-Encoding") else data)["error"]
        assert reply.status == 400 and ("JSON" in error or "non-object" in error), (reply.status, error)
    good_request_matches(server, runner)


def test_a_body_that_stops_arriving_gets_408_and_does_not_hold_the_drain() -> None:
    """A client that announced 100 kB and sent 9 bytes held its request open for good, and at SIGTERM the drain,
    whose end counted it as cut off (serve exited 1)."""
    import socket

    from deploykit.serve.front import FrontLimits, HttpFront
    from tests.serve.test_server import _free_ports

    port = _free_ports()[0]
    front = HttpFront("http://127.0.0.1:9", FrontLimits(max_elements=MAX_ELEMENTS, max_body_bytes=2**20,
                                                        idle_body_s=0.5), 1)
    front.start("127.0.0.1", port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                               b'{"inputs"')
            reply = http.client.HTTPResponse(connection)
            reply.begin()  # a timeout here: no answer within 5 s
            error = json.loads(reply.read())["error"]
    finally:
        drained = front.stop()
    assert reply.status == 408 and "9 of 100000 bytes came" in error, (reply.status, error)
    assert drained


def test_a_body_that_pauses_when_the_server_stops_gets_408_and_does_not_hold_the_drain() -> None:
    """A client that paused mid-body at SIGTERM held the whole drain (its body had a minute to resume), and serve
    exited 1 saying requests were cut off: give a longer --drain."""
    import socket
    import time

    from deploykit.serve.front import FrontLimits, HttpFront
    from tests.serve.test_server import _free_ports

    port = _free_ports()[0]
    front = HttpFront("http://127.0.0.1:9", FrontLimits(max_elements=MAX_ELEMENTS, max_body_bytes=2**20), 10)
    front.start("127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                           b'{"inputs"')
        time.sleep(0.3)  # the front is waiting for the rest
        started = time.monotonic()
        drained = front.stop()
        took = time.monotonic() - started
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        error = json.loads(reply.read())["error"]
    assert drained and took < 5, (drained, took)  # 2 s from the stop, not the 10 s drain
    assert reply.status == 408 and "while the server stops" in error, (reply.status, error)


TRITON_INFER = re.compile(r"/v2/models/[^/]+(/versions/[0-9]+)?/infer")  # http_server.cc, on the raw path
_SEGMENTS = st.sampled_from(["v2", "models", "seg", "infer", "versions", "1", ".", "..", "%2e", "%2E%2e", "se%67",
                             "%69nfer", "", "x"])


@pytest.fixture(scope="module")
def recording_front() -> Iterator[tuple[int, list[str], list[list[tuple[str, str]]]]]:
    """The front before a stand-in Triton that records each path it is asked for, and the headers, and answers
    200."""
    import http.server
    import threading

    from deploykit.serve.front import FrontLimits, HttpFront
    from tests.serve.test_server import _free_ports

    asked: list[str] = []
    headers: list[list[tuple[str, str]]] = []

    class Recording(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            asked.append(self.path)
            headers.append([(k.lower(), v) for k, v in self.headers.items()])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    triton = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=triton.serve_forever, daemon=True).start()
    port = _free_ports()[0]
    front = HttpFront(f"http://127.0.0.1:{triton.server_address[1]}",
                      FrontLimits(max_elements=MAX_ELEMENTS, max_body_bytes=2**20), 1)
    front.start("127.0.0.1", port)
    yield port, asked, headers
    front.stop()
    triton.shutdown()
    triton.server_close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(_SEGMENTS, min_size=3, max_size=7))
def test_a_path_triton_reads_as_inference_is_checked_whatever_its_dots_and_escapes(
        recording_front: tuple[int, list[str], list[list[tuple[str, str]]]], segments: list[str]) -> None:
    """The front checked the decoded path and passed on the one yarl resolved: /v2/models/seg/./infer and
    /v2/models/x/../seg/infer reached Triton as /v2/models/seg/infer with a body the front refuses."""
    port, asked, _ = recording_front
    path = "/" + "/".join(["v2", "models", *segments])
    asked.clear()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", path, body=b'{"inputs": [], "id": "a", "id": "b"}')
    reply = connection.getresponse()
    reply.read()
    connection.close()
    assert not [p for p in asked if TRITON_INFER.fullmatch(p.partition("?")[0])], (path, asked, reply.status)


_SINGLE = {"content-type", "content-encoding", "inference-header-content-length", "content-length",
           "transfer-encoding"}
_HEADERS = st.sampled_from([("Inference-Header-Content-Length", "14"), ("inference-header-content-length", "2"),
                            ("Content-Type", "application/json"), ("content-type", "application/octet-stream"),
                            ("Content-Encoding", "identity"), ("Content-Length", "14"), ("X-Tag", "a"), ("x-tag", "b"),
                            ("Accept-Encoding", "identity")])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=st.lists(_HEADERS, max_size=5))
def test_a_header_the_front_reads_is_refused_twice_and_every_other_copy_is_passed_on(
        recording_front: tuple[int, list[str], list[list[tuple[str, str]]]], sent: list[tuple[str, str]]) -> None:
    """The front read a header's first copy and passed its last on: an Inference-Header-Content-Length checked as
    14 reached Triton as 2 (a JSON header the front never read); a header it does not read lost all but its last
    copy."""
    import socket

    port, asked, seen = recording_front
    asked.clear()
    seen.clear()
    names = [name.lower() for name, _ in sent]
    lines = "".join(f"{name}: {value}\r\n" for name, value in sent)
    length = "" if "content-length" in names else "Content-Length: 14\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"POST /v2/models/seg/infer HTTP/1.1\r\nHost: x\r\n{length}{lines}Connection: close"
                           "\r\n\r\n".encode() + b'{"inputs": []}')
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        answer = reply.read()
    if any(names.count(name) > 1 for name in _SINGLE):
        assert reply.status == 400 and not asked, (sent, reply.status, answer)
        assert json.loads(answer)["error"], answer  # the front's words, or aiohttp's parser's (newer ones refuse
        # a second Content-Length or Content-Type themselves)
    elif reply.status == 200:  # else a header value the front refuses (IHCL 2)
        passed = [(name, value) for name, value in seen[0] if name in {"inference-header-content-length",
                                                                       "content-type", "x-tag", "accept-encoding"}]
        assert passed == [(n.lower(), v) for n, v in sent if n.lower() in {k for k, _ in passed} | {"x-tag"}], (
            sent, seen)


@pytest.mark.parametrize("length", ["1_4", "\u0661\u0664", "+14", " 14", "14 "])
def test_a_header_length_python_reads_otherwise_than_triton_is_refused(length: str) -> None:
    """int() read "1_4" and Arabic-Indic digits as 14, Triton's atoi as 1 and 0: the front checked a 14-byte JSON
    header and Triton read another."""
    body = json_body([{"name": "input", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}])
    assert why_refused(body + bytes(4), str(len(body)), MAX_ELEMENTS) is None
    reason = why_refused(body + bytes(4), length.replace("14", str(len(body))) if length != "1_4" else
                         f"{str(len(body))[0]}_{str(len(body))[1:]}", MAX_ELEMENTS)
    assert reason is not None and "not a number of bytes" in reason, reason
