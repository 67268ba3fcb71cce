"""deploykit serve's gRPC front against generated ModelInferRequests, on the real server: each gets Triton's answer
or an error a client can act on (never INTERNAL or UNKNOWN), the front refuses exactly what why_infer_refused
names, and the model still answers correctly afterwards."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.serve.grpc_front import why_infer_refused
from deploykit.targets.resolve import open_target
from deploykit.zoo.sources import load_model
from tests.serve.test_server import Server, start_server  # skips without the bundled server

pytest.importorskip("tritonclient.grpc")
import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

USER = "tests.fixtures.user_models:tiny_segmenter"
MAX_ELEMENTS = 2**20 // 4  # --max-input-mb 1
# What a client's own request earns; INTERNAL was the model's dead stub ("Stub process 'seg_0_0' is not healthy")
_CLIENT_FAULTS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE,
                  grpc.StatusCode.UNAVAILABLE}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any, Any]]:
    path = tmp_path_factory.mktemp("grpc") / "seg.onnx"
    onnx_from_torch(load_model(USER, options={"num_classes": 4}), path, input_shape=(1, 3, 32, 32), simplify=False)
    running = start_server([path], "--name=seg", "--no-images", grpc=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    with open_target(str(path)).runner as runner:
        yield running, runner, service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()
    running.process.send_signal(signal.SIGTERM)
    running.process.wait(30)


def _tensor_request(x: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="seg")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return request


def _still_answers(stub: Any, runner: Any) -> None:
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 12), dtype=np.float32)
    reply = stub.ModelInfer(_tensor_request(x), timeout=60)
    got = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(reply.outputs[0].shape)
    np.testing.assert_allclose(got, runner.infer({"input": x})["output"], rtol=1e-5, atol=1e-5)


_dims = st.one_of(st.sampled_from([0, 1, 2, 3, 8, 32]), st.integers(-3, 2**20), st.integers(2**60, 2**63 - 1))
_parameter = st.one_of(st.builds(service_pb2.InferParameter, bool_param=st.booleans()),
                       st.builds(service_pb2.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
                       st.builds(service_pb2.InferParameter, string_param=st.text(max_size=4)),
                       st.builds(service_pb2.InferParameter))
_parameters = st.dictionaries(st.sampled_from(["priority", "timeout", "sequence_id", "binary_data_size",
                                               "shared_memory_region", "shared_memory_byte_size", ""]),
                              _parameter, max_size=2)
_input = st.fixed_dictionaries({
    "name": st.sampled_from(["input", "input", "other"]), "datatype": st.sampled_from(["FP32", "FP16", "BYTES", "FP33",
                                                                                         ""]),
    "shape": st.lists(_dims, min_size=0, max_size=5), "raw": st.one_of(st.none(), st.integers(0, 4096)),
    "contents": st.one_of(st.none(), st.integers(0, 64)), "parameters": _parameters})


def _request(inputs: list[dict[str, Any]], parameters: dict[str, Any]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="seg", parameters=parameters)
    for given_input in inputs:
        tensor = request.inputs.add(name=given_input["name"], datatype=given_input["datatype"],
                                    shape=given_input["shape"], parameters=given_input["parameters"])
        if given_input["contents"] is not None:
            tensor.contents.fp32_contents.extend([0.5] * given_input["contents"])
        if given_input["raw"] is not None:
            request.raw_input_contents.append(bytes(given_input["raw"]))
    return request


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inputs=st.lists(_input, min_size=0, max_size=3), parameters=_parameters)
@example(inputs=[{"name": "input", "datatype": "FP32", "shape": [1, 3, 0, 2**62], "raw": 0, "contents": None,
                  "parameters": {}}], parameters={})  # the model's stub died for good
def test_any_model_infer_request_gets_an_answer_or_a_client_error_and_the_model_still_answers(
        served: tuple[Server, Any, Any], inputs: list[dict[str, Any]], parameters: dict[str, Any]) -> None:
    _, runner, stub = served
    request = _request(inputs, parameters)
    refused = why_infer_refused(request.SerializeToString(), MAX_ELEMENTS)
    try:
        stub.ModelInfer(request, timeout=60)
        assert refused is None
    except grpc.RpcError as exc:
        assert exc.code() in _CLIENT_FAULTS, (exc.code(), exc.details(), request)
        assert refused is None or exc.details() == refused, (exc.details(), refused)
    _still_answers(stub, runner)


def test_an_empty_tensor_in_a_stream_gets_its_error_and_the_stream_goes_on(served: tuple[Server, Any, Any]) -> None:
    """[1, 3, 0, 2**62] with 0 bytes, in a stream between good requests: the model's stub died for good, and the
    requests after it got INTERNAL."""
    _, runner, stub = served
    xs = [np.random.default_rng(i).standard_normal((1, 3, 8, 8), dtype=np.float32) for i in range(3)]
    requests = [_tensor_request(x) for x in xs]
    requests[1].inputs[0].ClearField("shape")
    requests[1].inputs[0].shape.extend([1, 3, 0, 2**62])
    requests[1].raw_input_contents[0] = b""
    for i, request in enumerate(requests):
        request.id = str(i)
    answers = list(stub.ModelStreamInfer(iter(requests), timeout=60))
    errors = {a.infer_response.id: a.error_message for a in answers if a.error_message}
    assert list(errors) == ["1"] and "other dimensions span" in errors["1"], errors
    assert sorted(a.infer_response.id for a in answers if not a.error_message) == ["0", "2"]
    _still_answers(stub, runner)
