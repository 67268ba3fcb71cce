"""OpenVINO's compile step: a precision graph (FP32, FP16 or INT8 Q/DQ ONNX) -> OpenVINO IR (.xml + .bin).

OpenVINO's ONNX frontend reads each QuantizeLinear -> DequantizeLinear pair as a FakeQuantize, and its
low-precision transformations run the quantized Convolutions in INT8 (measured here: every Conv of deploykit's
symmetric Q/DQ graph runs as u8 x i8 in the CPU plugin's runtime model). So the precision stays a graph
transform: the same calibration, accuracy budget, parity and report as ONNX Runtime and TensorRT.

An INT8 graph is lowered first as for ONNX Runtime (deploykit.graph.cpu_int8): UINT8 activations with the
ranges the INT8 pass observed (asymmetric FakeQuantize; the convolutions still run u8 x i8, and more faithfully
than the symmetric graph: trained MSI-Net CC 0.9917 against 0.9828 at the same speed), and on x86 CPUs without
VNNI 7-bit weights (deploykit.graph.seven_bit): the CPU plugin's u8 x s8 kernels there saturate in int16 as
ONNX Runtime's do (measured on an AVX2 EPYC: 18% of the output range off the Q/DQ graph's own values with
full-range weights, 2e-7 with 7-bit ones); depthwise convs keep full-range weights, which its depthwise kernel
computes exactly. The sidecar records the lowering and the CPU flags.

The IR is saved with `compress_to_fp16=False`: `openvino.save_model` compresses weights to FP16 by default,
which would silently turn a deploykit FP32 build into FP16 weights (OpenVINO docs, "Conversion Parameters").
An FP16 graph keeps its FP16 weights as they are. The IR is compiled once at build time, so a graph the CPU
plugin rejects fails the build, not the first run, and the runtime precision of each weighted layer is
recorded in the sidecar.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from deploykit.backends.openvino.runner import (
    DEVICE,
    compile_options,
    load_openvino,
    openvino_reason,
    runtime_precisions,
    weights_path,
)
from deploykit.environment import cpu_flags, cpu_model
from deploykit.errors import BuildError
from deploykit.graph.cpu_int8 import lower_for_cpu
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import atomic_output, scratch_folder
from deploykit.types import Progress

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
             "avx512_fp16", "amx_fp16")


def device_facts(core: Any) -> dict[str, Any]:
    """What the sidecar records about the CPU: model, the flags OpenVINO's kernels key on, its capabilities."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "cpu_flags": [f for f in CPU_FLAGS if f in flags], "device": DEVICE,
            "optimization_capabilities": list(core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))}


def compile(graph_onnx: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool,
            threads: int | None = None, progress: Progress | None = None,
            float_source: onnx.ModelProto | None = None) -> dict[str, Any]:
    """Write OUT (.xml) and its .bin from `graph_onnx`, atomically; return the sidecar's facts
    (backend_version, device, build_options). `float_source`: the float model a Q/DQ graph was built from."""
    say = progress or (lambda _m: None)
    out_path = Path(out)
    check_output_path(out_path, force=force)
    check_output_path(weights_path(out_path), force=force)
    ov = load_openvino()
    say(f"converting {Path(graph_onnx).name} to OpenVINO IR (OpenVINO {ov.get_version()})")
    source = onnx.load(str(graph_onnx))
    lowering = lower_for_cpu(source, float_source=float_source)
    if lowering.seven_bit:
        say(f"INT8 weights of {lowering.seven_bit} convs quantized to 7 bits for OpenVINO (depthwise convs keep 8): "
            "this CPU has no VNNI (see deploykit.graph.seven_bit)")
    with scratch_folder("deploykit-ov-") as folder:
        path = Path(graph_onnx)
        if any(lowering.facts().values()):  # an INT8 graph: OpenVINO reads the lowered copy
            path = Path(folder) / "graph.onnx"
            onnx.save(lowering.model, str(path))
        try:
            model = ov.convert_model(str(path))
        except Exception as exc:  # the frontend raises OpConversionFailure, GeneralFailure, ...
            raise BuildError(f"OpenVINO cannot convert {graph_onnx}: {openvino_reason(exc)}") from exc
    core = ov.Core()
    options = compile_options(threads)
    try:
        compiled = core.compile_model(model, DEVICE, options)
    except Exception as exc:
        raise BuildError(f"OpenVINO's CPU plugin cannot compile {graph_onnx}: "
                         f"{openvino_reason(exc)}") from exc
    precisions = runtime_precisions(compiled)
    _save(ov, model, out_path, force=force)
    # out_path may be a staging or race folder the user never sees: the landed artifact is named by the caller
    say("compiled the OpenVINO IR; weighted layers at run time: "
        + ", ".join(f"{op} {dict(counts)}" for op, counts in precisions.items()))
    return {"backend_version": str(ov.get_version()), "device": device_facts(core),
            "build_options": {"ir": "openvino", "weights": weights_path(out_path).name,
                              "compile_options": options, "runtime_precisions": precisions,
                              "int8_lowering": lowering.facts()}}


def _save(ov: Any, model: Any, out: Path, *, force: bool) -> None:
    """save_model into a temporary folder beside OUT, then rename the .bin and last the .xml into place."""
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as folder:
        staged = Path(folder) / "model.xml"
        try:
            ov.save_model(model, str(staged), compress_to_fp16=False)
        except Exception as exc:
            raise BuildError(f"OpenVINO could not write the IR: {openvino_reason(exc)}") from exc
        with atomic_output(out, force=force) as xml_tmp, \
                atomic_output(weights_path(out), force=force) as bin_tmp:
            shutil.move(str(staged.with_suffix(".bin")), bin_tmp)
            shutil.move(str(staged), xml_tmp)

