"""Run an ONNX graph on CPU (or an ONNX Runtime execution provider): sessions, their options, provider chains.

The one ONNX evaluator of the house: calibration, the accuracy-budget search, parity's localisation, export's
check, MAC counting and the kernel sweeps run graphs through it; the ONNX Runtime backend's Runner
(deploykit.backends.onnxruntime.runner) opens its sessions here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from deploykit.errors import BackendUnavailable, InputError, first_line

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


# ONNX Runtime needs the fallbacks listed after the provider the user asked for.
PROVIDER_CHAINS = {"cpu": ("cpu",), "cuda": ("cuda", "cpu"), "tensorrt": ("tensorrt", "cuda", "cpu")}


def provider_chain(providers: Sequence[str]) -> tuple[str, ...]:
    """The providers asked for, each followed by the fallbacks ONNX Runtime needs, checked to exist here."""
    chain: list[str] = []
    for provider in providers:
        for name in PROVIDER_CHAINS.get(provider, (provider,)):
            if name not in chain:
                chain.append(name)
    have = available_providers()
    absent = [p for p in chain if PROVIDER_ALIASES.get(p, p) not in have]
    if absent:
        raise BackendUnavailable(
            f"ONNX Runtime has no {', '.join(absent)} execution provider here (available: {', '.join(have)}); "
            "CUDA and TensorRT need onnxruntime-gpu (pip install 'deploykit[gpu]') and an NVIDIA GPU; "
            "or use --providers cpu")
    return tuple(chain)


def session_options(threads: int | None = None, *, optimization: str = "all") -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # Fatal only: its warnings (unused initializers) are noise, and the errors it logs are the ones it raises,
    # which deploykit reports in its one line (a node refusing a shape printed a second, red line before it).
    options.log_severity_level = 4
    return options


def session_from_onnx(
    model: str | os.PathLike[str] | bytes,
    *,
    providers: Sequence[str] = ("cpu",),
    threads: int | None = None,
    optimization: str = "all",
    disabled_optimizers: Sequence[str] = (),
) -> ort.InferenceSession:
    """An InferenceSession on the named providers ("cpu", "cuda", "tensorrt" or ORT's own names), without the
    graph optimizers named in `disabled_optimizers`."""
    wanted = [PROVIDER_ALIASES.get(p, p) for p in providers]
    have = available_providers()
    absent = [p for p in wanted if p not in have]
    if absent:
        raise BackendUnavailable(
            f"ONNX Runtime has no {', '.join(absent)} here (available: {', '.join(have)}); "
            "install deploykit[gpu] on a machine with an NVIDIA GPU, or use --providers cpu"
        )
    source = model if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise InputError(f"ONNX model {model} does not exist")
    try:
        return ort.InferenceSession(source, sess_options=session_options(threads, optimization=optimization),
                                    providers=wanted, disabled_optimizers=list(disabled_optimizers) or None)
    except Exception as exc:  # ORT raises its own unrelated exception types
        raise InputError(f"ONNX Runtime cannot load {model if not isinstance(model, bytes) else 'the model'}: "
                         f"{first_line(exc)}") from exc


# What a loaded session raises when a node cannot run on a feed of the right names, ranks and types, i.e. on its
# shape: Conv on a map smaller than its kernel raises InvalidArgument ("Invalid input shape: {2,2}", U-Net below
# its smallest tile), Concat/Reshape/Mod raise Fail. Every caller that runs a session on user inputs catches these.
RUN_FAILURES: tuple[type[Exception], ...] = (Fail, InvalidArgument, RuntimeException)

_NODE_FAILURE = re.compile(r"running (\S+) node\. Name:'([^']*)' Status Message: (.*)", re.DOTALL)
_SOURCE_LOCATION = re.compile(r"^\S+\.(?:h|cc|cpp):\d+ .*?\)\s*")  # "/onnxruntime_src/...cc:563 void f(...) "


def node_failure(exc: BaseException) -> str:
    """ONNX Runtime's "Non-zero status code returned while running Add node. Name:'skip' Status Message: <C++
    location> <what>" as "node skip (Add): <what>"; its first line otherwise."""
    found = _NODE_FAILURE.search(str(exc))
    if found is None:
        return first_line(exc, 300)
    op_type, name, message = found.groups()
    what = _SOURCE_LOCATION.sub("", message.strip()).splitlines()[0] if message.strip() else ""
    return f"node {name or '?'} ({op_type}): {what[:240]}"


# ONNX Runtime's WeightBiasQuantization turns a float bias read beside dequantized inputs into INT32 with scale
# input_scale x weight_scale; TensorRT keeps biases float, and with float16 scales the INT32 scale underflows.
AS_WRITTEN_DISABLED = ("WeightBiasQuantization",)


def session_as_written(model: bytes, *, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session that computes a Q/DQ graph as written, as TensorRT does: ONNX Runtime's optimizations but
    the one that would quantize its float biases (AS_WRITTEN_DISABLED)."""
    return ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(AS_WRITTEN_DISABLED))
