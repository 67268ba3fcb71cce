"""Enums of the tensorrt double, per API profile ("10" = TensorRT 10.x, "11" = TensorRT 11.x).

Members removed in 11.x (NVIDIA's "Removed Python APIs and Replacements") exist only in the 10.x profile, so
touching them under 11.x raises AttributeError as the real bindings do.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

# BuilderFlag as bound in NVIDIA/TensorRT python/src/infer/pyCore.cpp, py::enum_<BuilderFlag>: release/10.16 has
# all of these; main (11.1) binds no precision flags, REJECT_EMPTY_ALGORITHMS or WEIGHTLESS, and still binds the
# deprecated DIRECT_IO (main l.1608: .value("DIRECT_IO", BuilderFlag::kDIRECT_IO, ...)).
REMOVED_IN_11 = {
    "BuilderFlag": ["FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS", "REJECT_EMPTY_ALGORITHMS", "WEIGHTLESS"],
    "NetworkDefinitionCreationFlag": ["EXPLICIT_BATCH"],
}
PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4")


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


def _enum(name: str, members: list[str], profile: str, start: int = 0) -> Any:
    removed = REMOVED_IN_11.get(name, []) if profile == "11" else []
    return enum.IntEnum(name, [(m, i + start) for i, m in enumerate(members) if m not in removed])


def make_enums(profile: str) -> dict[str, Any]:
    builder_flags = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
                     "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                     "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8",
                     "ERROR_ON_TIMING_CACHE_MISS", "BF16", "DISABLE_COMPILATION_CACHE", "STRIP_PLAN",
                     "REFIT_IDENTICAL", "WEIGHT_STREAMING", "INT4", "REFIT_INDIVIDUAL", "STRICT_NANS", "MONITOR_MEMORY",
                     "FP4", "EDITABLE_TIMING_CACHE", "WEIGHTLESS", "DISTRIBUTIVE_INDEPENDENCE"]
    return {
        "BuilderFlag": _enum("BuilderFlag", builder_flags, profile),
        "NetworkDefinitionCreationFlag": _enum(
            "NetworkDefinitionCreationFlag",
            ["EXPLICIT_BATCH", "STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"], profile),
        "MemoryPoolType": _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                   "DLA_GLOBAL_DRAM", "TACTIC_DRAM", "TACTIC_SHARED_MEMORY"], profile),
        "HardwareCompatibilityLevel": _enum("HardwareCompatibilityLevel",
                                            ["NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"], profile),
        "TensorIOMode": _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], profile),
        "DataType": _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64",
                                       "INT4", "FP4", "E8M0"], profile),
        "ProfilingVerbosity": _enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], profile),
        "LayerInformationFormat": _enum("LayerInformationFormat", ["ONELINE", "JSON"], profile),
        "ErrorCode": _enum("ErrorCode", ["SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED", "MODEL_DESERIALIZE_FAILED",
                                         "INVALID_VALUE", "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH",
                                         "UNSUPPORTED_NODE", "UNSUPPORTED_NODE_ATTR", "UNSUPPORTED_NODE_INPUT",
                                         "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_DYNAMIC",
                                         "UNSUPPORTED_NODE_SHAPE", "REFIT_FAILED"], profile),
    }


NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
               "UINT8": np.uint8, "INT64": np.int64}


def nptype(dtype: Any) -> type:
    """tensorrt.nptype: the numpy type of a tensorrt.DataType; like the 10.x bindings' tensorrt/__init__.py it
    knows FLOAT, HALF, INT8, INT32, INT64, BOOL, UINT8 ("fp8 and bfloat16 have no equivalent numpy type") and
    raises TypeError for BF16, FP8, INT4, FP4 and E8M0."""
    try:
        return NUMPY_TYPES[dtype.name]  # type: ignore[return-value]
    except KeyError:
        raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {dtype}") from None
