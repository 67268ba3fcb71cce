"""The double's Builder, IBuilderConfig, IOptimizationProfile, ITimingCache and IHostMemory.

"Building" validates what a real build needs and serialises a plan: a header (versions, GPU, flags, profile,
profiling verbosity) plus the ONNX, which the double's runtime executes with ONNX Runtime. Rules and sources
(NvInfer.h is NVIDIA/TensorRT include/NvInfer.h; line numbers of release/10.16):
- a parsed network with outputs ("Network must have at least one output", the builder's error);
- an optimization profile for every dynamic input, matching its fixed dimensions, none negative (NvInfer.h
  IBuilderConfig::addOptimizationProfile, l.11421: "must be called at least once if the network has dynamic or
  shape input tensors"; -1 for an invalid profile, l.11427);
- no precision flags on a strongly typed network (Developer Guide, "Strongly Typed Networks"; NvInfer.h
  BuilderFlag kFP16/kINT8/... "Deprecated in TensorRT 10.12. Superseded by strong typing", removed in 11.x);
- builder_optimization_level: valid from 0; above 5 it builds as 5 (NvInfer.h
  IBuilderConfig::setBuilderOptimizationLevel, l.11780-11782: "Valid values include integers from 0 to the maximum
  optimization level, which is currently 5. Setting it to greater than the maximum level results in behavior
  identical to the maximum level");
  AMPERE_PLUS only on compute capability 8.0+ (NvInfer.h HardwareCompatibilityLevel::kAMPERE_PLUS, l.10969: "only
  supported for engines built on NVIDIA Ampere and later GPUs");
- ProfilingVerbosity defaults to LAYER_NAMES_ONLY (NvInfer.h IBuilderConfig::setProfilingVerbosity, l.11464),
  recorded for the inspector;
- a timing cache refuses another device's entries unless ignore_mismatch (NvInfer.h
  IBuilderConfig::setTimingCache, l.11660-11662: "A failure will be reported if the CUDA device property in the
  provided cache is different from current environment"), and lists its keys (ITimingCache::queryKeys, l.10761;
  Python binding "queryKeys", python/src/infer/pyCore.cpp).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import onnx

from tests.fakes.tensorrt_double._enums import PRECISION_FLAGS, Severity
from tests.fakes.tensorrt_double._parse import INetworkDefinition
from tests.fakes.tensorrt_double._state import Base, deprecated

MAGIC = b"DKTRTDOUBLE1"


class IHostMemory(bytes):
    @property
    def nbytes(self) -> int:
        return len(self)


def pack_plan(header: dict[str, Any], model_bytes: bytes) -> bytes:
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + model_bytes


def unpack_plan(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    if not data.startswith(MAGIC):
        return None
    (size,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    return json.loads(data[start:start + size]), data[start + size:]


class IOptimizationProfile(Base):
    def __init__(self) -> None:
        self.shapes: dict[str, list[tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
        if not len(lo) == len(mid) == len(hi):
            raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            raise RuntimeError("Shape provided for max is inconsistent with other shapes.")
        self.shapes[input] = [lo, mid, hi]

    def get_shape(self, input: str) -> list[tuple[int, ...]]:
        return list(self.shapes.get(input, []))


class ITimingCache(Base):
    def __init__(self, device: str, entries: set[str]) -> None:
        self.device, self.entries = device, set(entries)

    def serialize(self) -> IHostMemory:
        return IHostMemory(json.dumps({"device": self.device, "entries": sorted(self.entries)}).encode())

    def queryKeys(self) -> list[str]:  # the binding's name (python/src/infer/pyCore.cpp: .def("queryKeys"))
        return sorted(self.entries)

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if input_cache.device != self.device and not ignore_mismatch:
            return False
        self.entries |= input_cache.entries
        return True

    def reset(self) -> bool:
        self.entries.clear()
        return True


class IBuilderConfigBase(Base):
    def __init__(self) -> None:
        self.flags = 0
        self.pool_limits: dict[Any, int] = {}
        self._level = 3
        self.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.NONE
        self.profiles: list[IOptimizationProfile] = []
        self._cache: ITimingCache | None = None
        # ProfilingVerbosity defaults to LAYER_NAMES_ONLY (IBuilderConfig docs): the inspector then lists names.
        self.profiling_verbosity = self.trt.ProfilingVerbosity.LAYER_NAMES_ONLY

    @property
    def builder_optimization_level(self) -> int:
        return self._level

    @builder_optimization_level.setter
    def builder_optimization_level(self, value: int) -> None:
        self._level = int(value)

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self.pool_limits[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        default = self.state.gpu.memory_bytes if self.state.gpu else 0
        return self.pool_limits.get(pool, default if pool == self.trt.MemoryPoolType.WORKSPACE else 0)

    def set_flag(self, flag: Any) -> None:
        self.flags |= 1 << int(flag)

    def clear_flag(self, flag: Any) -> None:
        self.flags &= ~(1 << int(flag))

    def get_flag(self, flag: Any) -> bool:
        return bool(self.flags & (1 << int(flag)))

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile.shapes:
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache | None:
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache(_device_key(self.state), set())
        try:
            parsed = json.loads(data)
            return ITimingCache(str(parsed["device"]), set(parsed["entries"]))
        except (ValueError, KeyError, TypeError):
            return None

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if cache.device != _device_key(self.state) and not ignore_mismatch:
            return False
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache


class IBuilderConfig10(IBuilderConfigBase):
    int8_calibrator = deprecated("IBuilderConfig.int8_calibrator", lambda self: None)
    quantization_flags = deprecated("IBuilderConfig.quantization_flags", lambda self: 0)


def _device_key(state: Any) -> str:
    gpu = state.gpu
    return f"{state.version}|{gpu.name if gpu else '-'}|{gpu.compute_capability if gpu else '-'}"


class BuilderBase(Base):
    def __init__(self, logger: Any) -> None:
        self.logger = self.adopt_logger(logger)
        self.require_gpu(self.logger)

    def create_network(self, flags: int = 0) -> INetworkDefinition | None:
        valid = 0
        for member in self.trt.NetworkDefinitionCreationFlag:
            valid |= 1 << int(member)
        if flags & ~valid:
            self.logger.log(Severity.ERROR, f"createNetworkV2: invalid NetworkDefinitionCreationFlags {flags:#x}")
            return None
        strong = self.state.profile == "11" or bool(flags & (1 << int(self.trt.NetworkDefinitionCreationFlag
                                                                         .STRONGLY_TYPED)))
        return self.trt.INetworkDefinition(flags, strong)

    def create_builder_config(self) -> IBuilderConfigBase:
        return self.trt.IBuilderConfig()  # type: ignore[no-any-return]

    def create_optimization_profile(self) -> IOptimizationProfile:
        return self.trt.IOptimizationProfile()  # type: ignore[no-any-return]

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfigBase) -> IHostMemory | None:
        problem = self._problem(network, config)
        if problem is not None:
            self.logger.log(Severity.ERROR, problem)
            return None
        assert network.model_bytes is not None and self.state.gpu is not None
        profile = config.profiles[0].shapes if config.profiles else {}
        self._use_cache(config, network.model_bytes)
        header = {
            "version": self.state.version, "profile_api": self.state.profile, "gpu": self.state.gpu.name,
            "cc": list(self.state.gpu.compute_capability),
            "version_compatible": config.get_flag(self.trt.BuilderFlag.VERSION_COMPATIBLE),
            "hardware": config.hardware_compatibility_level.name,
            "profile": {k: [list(s) for s in v] for k, v in profile.items()},
            "profiling_verbosity": config.profiling_verbosity.name,
        }
        self.state.builds.append({
            **header, "flags": config.flags, "strongly_typed": network.strongly_typed,
            "workspace": config.get_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE),
            "optimization_level": min(config.builder_optimization_level, 5),
            "timing_cache": config.get_timing_cache() is not None,
        })
        return IHostMemory(pack_plan(header, network.model_bytes))

    def _problem(self, network: INetworkDefinition, config: IBuilderConfigBase) -> str | None:
        if network.model_bytes is None:
            return "Network must have at least one output (nothing was parsed)"
        flags = self.trt.BuilderFlag
        if network.strongly_typed:
            used = [f for f in PRECISION_FLAGS if hasattr(flags, f) and config.get_flag(getattr(flags, f))]
            if used:
                return f"BuilderFlag {', '.join(used)} is not allowed for a strongly typed network"
        if config.builder_optimization_level < 0:  # above 5 is clamped (module docstring, l.11780-11782)
            return f"builder optimization level {config.builder_optimization_level} is negative (valid from 0)"
        level = config.hardware_compatibility_level
        assert self.state.gpu is not None
        if level == self.trt.HardwareCompatibilityLevel.AMPERE_PLUS and self.state.gpu.compute_capability < (8, 0):
            return "Hardware compatibility AMPERE_PLUS is only supported on Ampere and later GPUs"
        profile = config.profiles[0].shapes if config.profiles else {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if -1 not in tensor.shape:
                continue
            shapes = profile.get(tensor.name)
            if shapes is None:
                return (f"Network has dynamic or shape inputs, but no optimization profile has been defined for "
                        f"{tensor.name}")
            for shape in shapes:
                if len(shape) != len(tensor.shape) or any(d != -1 and d != s for d, s in zip(tensor.shape, shape,
                                                                                              strict=True)):
                    return f"profile shape {shape} for {tensor.name} does not match its dimensions {tensor.shape}"
                # NvInferRuntime.h IOptimizationProfile::setDimensions (release/10.16 l.2686): "(2) 0 <= minDims.d[i]
                # <= optDims.d[i] <= maxDims.d[i]"; "a full validation is performed at engine build time".
                if min(shape) < 0:
                    return f"profile shape {shape} for {tensor.name} has a negative dimension"
        return None

    def _use_cache(self, config: IBuilderConfigBase, model_bytes: bytes) -> None:
        cache = config.get_timing_cache()
        if cache is None:
            return
        model = onnx.load_from_string(model_bytes)
        keys = {hashlib.sha256(f"{n.op_type}|{n.attribute}".encode()).hexdigest()[:16] for n in model.graph.node}
        self.state.timing_cache_hits += len(keys & cache.entries)
        cache.entries |= keys


class Builder10(BuilderBase):
    platform_has_fast_fp16 = deprecated("Builder.platform_has_fast_fp16", lambda self: True)
    platform_has_fast_int8 = deprecated("Builder.platform_has_fast_int8", lambda self: True)
