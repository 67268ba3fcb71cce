"""The tensorrt double matches the documented 10.x / 11.x API surfaces, so tests built on it mean something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fakes.fixtures import TrtDouble
from tests.fakes.tensorrt_double import REMOVED_IN_11_MEMBERS, TensorRTDeprecationWarning, make_tensorrt
from tests.fakes.tensorrt_double._enums import REMOVED_IN_11
from tests.fakes.tensorrt_double._state import Logger


def _network(trt, tiny_onnx: Path, logger: Logger | None = None):  # type: ignore[no-untyped-def]
    logger = logger or Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse_from_file(str(tiny_onnx))
    return builder, network


@pytest.mark.parametrize("enum_name,member", [(e, m) for e, ms in REMOVED_IN_11.items() for m in ms])
def test_removed_enum_members_absent_in_11_present_in_10(enum_name: str, member: str) -> None:
    assert hasattr(getattr(make_tensorrt("10"), enum_name), member)
    with pytest.raises(AttributeError):
        getattr(getattr(make_tensorrt("11"), enum_name), member)


@pytest.mark.parametrize("cls,member", [(c, m) for c, ms in REMOVED_IN_11_MEMBERS.items() for m in ms])
def test_removed_members_absent_in_11(cls: str, member: str) -> None:
    assert hasattr(getattr(make_tensorrt("10"), cls), member)
    assert not hasattr(getattr(make_tensorrt("11"), cls), member)


def test_calibrators_only_in_10() -> None:
    assert hasattr(make_tensorrt("10"), "IInt8EntropyCalibrator2")
    assert not hasattr(make_tensorrt("11"), "IInt8EntropyCalibrator2")


def test_deprecated_10_api_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    trt = make_tensorrt("10")
    builder = trt.Builder(Logger())
    with pytest.warns(TensorRTDeprecationWarning):
        assert builder.platform_has_fast_fp16


def test_builder_needs_a_gpu(trt_double_no_gpu: TrtDouble) -> None:
    trt = trt_double_no_gpu.module
    logger = Logger()
    with pytest.raises(TypeError, match="factory function returned nullptr"):
        trt.Builder(logger)
    assert any("CUDA initialization failure" in m for _, m in logger.messages)


def test_logger_subclass_must_call_base_init() -> None:
    trt = make_tensorrt("11")

    class Forgetful(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            pass

        def log(self, severity: object, msg: str) -> None:
            pass

    with pytest.raises(TypeError, match="__init__"):
        trt.Builder(Forgetful())


def test_create_network_rejects_unknown_flags(trt_double: TrtDouble) -> None:
    trt = trt_double.module
    logger = Logger()
    assert trt.Builder(logger).create_network(1 << 7) is None
    assert any("invalid" in m for _, m in logger.messages)


def test_set_timing_cache_needs_both_arguments(trt_double: TrtDouble) -> None:
    config = trt_double.module.Builder(Logger()).create_builder_config()
    cache = config.create_timing_cache(b"")
    with pytest.raises(TypeError):
        config.set_timing_cache(cache)  # type: ignore[call-arg]
    assert config.set_timing_cache(cache, False)


def test_precision_flags_fail_a_strongly_typed_build_in_10(tiny_onnx: Path) -> None:
    trt = make_tensorrt("10")
    builder, network = _network(trt, tiny_onnx)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 64, 64))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None


def test_dynamic_input_needs_a_profile(trt_double: TrtDouble, tiny_onnx: Path) -> None:
    builder, network = _network(trt_double.module, tiny_onnx)
    assert builder.build_serialized_network(network, builder.create_builder_config()) is None


def test_context_enforces_profile_and_addresses(trt_double: TrtDouble, tiny_onnx: Path) -> None:
    trt = trt_double.module
    logger = Logger()
    builder, network = _network(trt, tiny_onnx, logger)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 64, 64))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    assert not context.set_input_shape("input", (1, 3, 128, 128))  # outside the profile
    assert context.set_input_shape("input", (1, 3, 64, 64))
    stream = trt_double.device.stream()
    assert not context.execute_async_v3(stream.handle)  # no addresses yet
    assert any("address" in m for _, m in logger.messages)


def test_the_first_logger_receives_everything(trt_double: TrtDouble) -> None:
    """TensorRT keeps the first logger of the process: a later one passed to a Runtime hears nothing."""
    trt = trt_double.module
    first, second = Logger(), Logger()
    trt.Builder(first)
    assert trt.Runtime(second).deserialize_cuda_engine(b"not a plan") is None
    assert second.messages == [] and any("Magic tag" in m for _, m in first.messages)


def _plan(trt, tiny_onnx: Path) -> bytes:  # type: ignore[no-untyped-def]
    builder, network = _network(trt, tiny_onnx)
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 64, 64))
    config.add_optimization_profile(profile)
    return builder.build_serialized_network(network, config)  # type: ignore[no-any-return]


def test_execution_is_deferred_until_synchronize(trt_double: TrtDouble, tiny_onnx: Path) -> None:
    import numpy as np

    trt, device = trt_double.module, trt_double.device
    engine = trt.Runtime(Logger()).deserialize_cuda_engine(_plan(trt, tiny_onnx))
    context = engine.create_execution_context()
    stream = device.stream()
    buffers = {"input": device.allocate((1, 3, 64, 64), np.dtype("float32"), stream),
               "output": device.allocate((1, 3, 64, 64), np.dtype("float32"), stream)}
    assert context.set_input_shape("input", (1, 3, 64, 64))
    for name, buffer in buffers.items():
        assert context.set_tensor_address(name, buffer.ptr)
    buffers["input"].upload(np.ones((1, 3, 64, 64), np.float32), stream)
    assert context.execute_async_v3(stream.handle)
    buffers["output"].download(stream)
    assert not buffers["output"].result().any()  # nothing has run yet: a missing synchronize reads zeros
    stream.synchronize()
    assert buffers["output"].result().any() and context.executions == 1


def test_buffers_of_another_dtype_or_stream_are_refused(trt_double: TrtDouble, tiny_onnx: Path) -> None:
    import numpy as np

    trt, device = trt_double.module, trt_double.device
    logger = Logger()
    trt.Builder(logger)
    engine = trt.Runtime(logger).deserialize_cuda_engine(_plan(trt, tiny_onnx))
    context = engine.create_execution_context()
    mine, other = device.stream(), device.stream()
    assert context.set_input_shape("input", (1, 3, 64, 64))
    assert context.set_tensor_address("input", device.allocate((1, 3, 64, 64), np.dtype("float16"), mine).ptr)
    assert context.set_tensor_address("output", device.allocate((1, 3, 64, 64), np.dtype("float32"), mine).ptr)
    assert not context.execute_async_v3(mine.handle)
    assert any("float16" in m and "no casts" in m for _, m in logger.messages)
    assert context.set_tensor_address("input", device.allocate((1, 3, 64, 64), np.dtype("float32"), mine).ptr)
    assert not context.execute_async_v3(other.handle)  # buffers of `mine` used on `other`, no event between
    assert any("no event ordering them" in m for _, m in logger.messages)
    assert context.execute_async_v3(mine.handle)
    buffer = device.allocate((2,), np.dtype("float32"), mine)
    with pytest.raises(TypeError, match="never casts"):
        buffer.upload(np.zeros(2, np.float64), mine)


def _qdq_graph(zero: object, scale: float = 0.1, data_zero: object = None):  # type: ignore[no-untyped-def]
    """x -> QuantizeLinear(scale, zero) -> DequantizeLinear -> y; `zero` None: no zero point input."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s")]
    q_inputs = ["x", "s"]
    if zero is not None:
        inits.append(numpy_helper.from_array(np.asarray(zero), "z"))
        q_inputs.append("z")
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", *q_inputs[1:]], ["y"], name="dq")]
    return helper.make_graph(nodes, "g", [x], [y], inits)


@pytest.mark.parametrize("case", ["uint8 zero point", "no zero point"])
def test_uint8_quantize_linear_is_accepted_as_int8(trt_double: TrtDouble, case: str) -> None:
    """onnx-tensorrt QuantDequantLinearHelper (10.12+): "ONNX default is UINT8, TRT will default to INT8", and a
    UINT8 zero point only warns ("Defaulting to INT8 instead"). The double used to refuse both; it now parses
    them and computes INT8, so a negative input survives (UINT8 would clamp it to 0)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    graph = _qdq_graph(np.array(0, np.uint8) if case == "uint8 zero point" else None)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    trt = trt_double.module
    logger = Logger()
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse(model.SerializeToString())
    session = ort.InferenceSession(network.model_bytes, providers=["CPUExecutionProvider"])
    x = np.array([[-1.0, -0.2, 0.3, 20.0]], np.float32)
    assert np.allclose(session.run(None, {"x": x})[0], [[-1.0, -0.2, 0.3, 12.7]])
    assert (case == "uint8 zero point") == any("Defaulting to INT8" in m for _, m in logger.messages)


@pytest.mark.parametrize("zero,scale,message", [
    (np.uint8(128), 0.1, "symmetric"), (np.int8(0), 0.0, "Scale coefficients must all be positive"),
    (np.int8(0), -0.1, "Scale coefficients must all be positive")])
def test_asymmetric_or_non_positive_scale_qdq_is_refused(trt_double: TrtDouble, zero: object, scale: float,
                                                         message: str) -> None:
    """QuantDequantLinearHelper: "Non-zero zero point is not supported" and "Scale coefficients must all be
    positive" (kINVALID_NODE), the latter what a calibration that saw only zeros produces."""
    assert message in _refusal(trt_double, _qdq_graph(zero, scale))


def test_dequantizing_uint8_weights_is_refused(trt_double: TrtDouble) -> None:
    """QuantDequantLinearHelper: checkNotInvalidType(inputs.at(0), {"UINT8"}) for DequantizeLinear."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones(4, np.uint8), "w"),
             numpy_helper.from_array(np.array(0.5, np.float32), "s")]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("DequantizeLinear", ["w", "s"], ["y"], name="dq_w")], "g", [], [y],
                              inits)
    assert "UINT8" in _refusal(trt_double, graph)


def _refusal(trt_double: TrtDouble, graph, opset: int = 19) -> str:  # type: ignore[no-untyped-def]
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    trt = trt_double.module
    logger = Logger()
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert not parser.parse(model.SerializeToString())
    return str(parser.get_error(0).desc())


@pytest.mark.parametrize("source", ["INT64", "INT32", "INT8", "BOOL"])
def test_a_cast_from_an_integer_to_uint8_is_refused(trt_double: TrtDouble, source: str) -> None:
    """NvInferRuntimeBase.h, DataType::kUINT8: UINT8 conversions only from FLOAT/HALF (ArgMax's INT64 indices
    cast straight to uint8 were the old `--head argmax`)."""
    from onnx import TensorProto, helper

    elem = getattr(TensorProto, source)
    x = helper.make_tensor_value_info("x", elem, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT8, name="to_bytes")],
                              "g", [x], [y])
    assert f"Cast from {source} to UINT8" in _refusal(trt_double, graph)


@pytest.mark.parametrize("kind", ["INT32", "FLOAT"])
def test_dequantizing_anything_but_a_quantized_type_is_refused(trt_double: TrtDouble, kind: str) -> None:
    """IDequantizeLayer takes INT8, FP8, INT4 or FP4 (NvInfer.h): an INT32 bias through DequantizeLinear is not
    TensorRT's form (it keeps biases in float)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    values = np.arange(4, dtype=np.int32 if kind == "INT32" else np.float32)
    inits = [numpy_helper.from_array(values, "b"), numpy_helper.from_array(np.array(0.5, np.float32), "s")]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("DequantizeLinear", ["b", "s"], ["y"], name="dq_bias")], "g", [],
                              [y], inits)
    assert f"DequantizeLinear of {kind} data" in _refusal(trt_double, graph, opset=21)


def test_double_graph_io_becomes_float(trt_double: TrtDouble, tmp_path: Path) -> None:
    """onnx-tensorrt casts DOUBLE graph inputs and outputs to FLOAT (importerUtils.cpp convertDtype), so the engine
    takes and returns float32."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from deploykit.backends.tensorrt.build import engine_from_onnx
    from deploykit.backends.tensorrt.runner import TensorRTRunner

    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "d.onnx")
    engine_from_onnx(tmp_path / "d.onnx", tmp_path / "d.plan")
    with TensorRTRunner.from_artifact(tmp_path / "d.plan") as runner:
        assert [s.dtype for s in (*runner.input_specs(), *runner.output_specs())] == ["float32", "float32"]
        got = runner.infer({"x": np.array([[-1, 0, 2, 3]], np.float32)})["y"]
    assert got.dtype == np.float32 and got.tolist() == [[0, 0, 2, 3]]


def test_inspector_layouts_and_verbosity(trt_double: TrtDouble, tiny_onnx: Path) -> None:
    import json

    trt = trt_double.module
    engine = trt.Runtime(Logger()).deserialize_cuda_engine(_plan(trt, tiny_onnx))
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    ten = trt_double.profile == "10"
    assert ("Bindings" in info) == ten and ("I/O Tensors" in info) == (not ten)
    tensor = info["Layers"][0]["Inputs"][0]
    assert ("Format/Datatype" in tensor) == (trt_double.profile == "10")
    assert ("DataType" in tensor and "Format" in tensor) == (trt_double.profile == "11")
    builder, network = _network(trt, tiny_onnx)
    config = builder.create_builder_config()  # default LAYER_NAMES_ONLY
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    config.add_optimization_profile(profile)
    names = trt.Runtime(Logger()).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    layers = json.loads(names.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    assert all(isinstance(layer, str) for layer in layers["Layers"])


def test_nptype_refuses_what_numpy_cannot_hold() -> None:
    trt = make_tensorrt("11")
    assert trt.nptype(trt.DataType.HALF) is not None
    for name in ("BF16", "FP8", "INT4", "FP4", "E8M0"):
        with pytest.raises(TypeError):
            trt.nptype(trt.DataType[name])


@pytest.mark.parametrize("level,builds", [(-1, False), (5, True), (7, True)])
def test_optimization_level_above_5_builds_as_5(trt_double: TrtDouble, tiny_onnx: Path, level: int,
                                                builds: bool) -> None:
    """NvInfer.h (10.16 l.11780-11782): valid from 0 to 5; "Setting it to greater than the maximum level results
    in behavior identical to the maximum level" (the double used to refuse 6 and up)."""
    trt = trt_double.module
    builder, network = _network(trt, tiny_onnx)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    config.add_optimization_profile(profile)
    config.builder_optimization_level = level
    assert (builder.build_serialized_network(network, config) is not None) == builds
    if builds:
        assert trt_double.state.builds[-1]["optimization_level"] == min(level, 5)


@pytest.mark.parametrize("target", ["INT32", "INT64", "BOOL"])
def test_a_cast_from_uint8_to_an_integer_is_refused(trt_double: TrtDouble, target: str) -> None:
    """NvInferRuntimeBase.h (10.16 l.167): "kUINT8 conversions are only supported for {kFLOAT, kHALF}", which
    holds for casts from UINT8 as well; the double used to accept UINT8 -> INT32."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])
    y = helper.make_tensor_value_info("y", getattr(TensorProto, target), [1, 4])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=getattr(TensorProto, target),
                                                name="from_bytes")], "g", [x], [y])
    assert f"Cast from UINT8 to {target}" in _refusal(trt_double, graph)


def test_builder_flags_follow_the_bindings() -> None:
    """python/src/infer/pyCore.cpp py::enum_<BuilderFlag>: main (11.1) still binds the deprecated DIRECT_IO and no
    longer binds REJECT_EMPTY_ALGORITHMS or WEIGHTLESS; release/10.16 binds all three."""
    ten, eleven = make_tensorrt("10").BuilderFlag, make_tensorrt("11").BuilderFlag
    assert {"DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "WEIGHTLESS", "DISTRIBUTIVE_INDEPENDENCE"} <= set(ten.__members__)
    assert "DIRECT_IO" in eleven.__members__ and "DISTRIBUTIVE_INDEPENDENCE" in eleven.__members__
    assert not {"REJECT_EMPTY_ALGORITHMS", "WEIGHTLESS"} & set(eleven.__members__)


def test_a_negative_profile_dimension_fails_the_build(trt_double: TrtDouble, tiny_onnx: Path) -> None:
    """NvInferRuntime.h IOptimizationProfile::setDimensions: "0 <= minDims.d[i] <= optDims.d[i] <= maxDims.d[i]",
    fully validated at build time; the double used to build with a min batch of -1."""
    trt = trt_double.module
    builder, network = _network(trt, tiny_onnx)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (-1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is None
