"""The tensorrt double matches the documented 10.x / 11.x API surfaces, so tests built on it mean something."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.fixtures import TrtDouble
from tests.fakes.tensorrt_double import REMOVED_IN_11_MEMBERS, TensorRTDeprecationWarning, make_tensorrt
from tests.fakes.tensorrt_double._enums import REMOVED_IN_11
from tests.fakes.tensorrt_double._state import Logger


def _network(trt, tiny_onnx: Path):  # type: ignore[no-untyped-def]
    builder = trt.Builder(Logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, Logger()).parse_from_file(str(tiny_onnx))
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
    builder, network = _network(trt, tiny_onnx)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 64, 64))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    logger = Logger()
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    assert not context.set_input_shape("input", (1, 3, 128, 128))  # outside the profile
    assert context.set_input_shape("input", (1, 3, 64, 64))
    stream = trt_double.device.stream()
    assert not context.execute_async_v3(stream.handle)  # no addresses yet
    assert any("address" in m for _, m in logger.messages)
