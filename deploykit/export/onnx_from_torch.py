"""torch -> ONNX: exporter choice, dynamic axes, metadata, checker, guarded simplification, verification.

The verified model is written atomically; a model that does not match PyTorch is not written at all.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import onnx
import torch

from deploykit.backends.torch import module_dtype
from deploykit.errors import ExportError
from deploykit.export.exported_graph import (
    check_graph,
    check_opset_written,
    check_reads_input,
    export_metadata,
    pin_output_dims,
    simplify_graph,
)
from deploykit.export.model_outputs import model_outputs
from deploykit.export.results import ExportResult, Tolerance, shape_text
from deploykit.export.verification_shapes import check_multiple, size_checked_shapes, verification_shapes
from deploykit.export.verify import TorchOutputs, verify_against_torch
from deploykit.exporters import DEFAULT_OPSET, EXPORTERS, check_export_fits, run_exporter, traced_model
from deploykit.graph.heads import apply_head, check_head
from deploykit.io.metadata import write_metadata
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import atomic_output, scratch_folder
from deploykit.types import Progress
from deploykit.zoo.sources import LoadedModel


def onnx_from_torch(
    loaded: LoadedModel,
    out: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int, int] | None = None,
    dynamic: bool = True,
    opset: int | None = None,
    exporter: str | None = None,
    simplify: bool = True,
    tolerance: Tolerance | None = None,
    force: bool = False,
    progress: Progress | None = None,
    size_multiple: int | None = None,
    head: str | None = None,
) -> ExportResult:
    """Export, check, simplify where parity holds, verify against PyTorch on two shapes, write atomically.

    Defaults: opset DEFAULT_OPSET, the model's own exporter (ModelSpec.exporter), dynamic batch/H/W.
    size_multiple: height and width of the verification shapes stay multiples of it (default: the zoo's
    value; for a user model, detected when it rejects the second shape, see `size_checked_shapes`).
    `head` (graph/heads.py) is appended after verification, which compares the network's own outputs.
    """
    say = progress or (lambda _msg: None)
    opset = DEFAULT_OPSET if opset is None else opset
    check_output_path(out, force=force)
    spec = loaded.spec
    shape = input_shape or (1, 3, *spec.input_size)
    if not 7 <= opset <= 24:
        raise ExportError(f"opset {opset} is outside 7-24; use {DEFAULT_OPSET} (TensorRT 10 parses 9-24)")
    chosen = exporter or spec.exporter
    if chosen not in EXPORTERS:
        raise ExportError(f"unknown exporter {chosen!r}; choose one of {', '.join(EXPORTERS)}")
    check_multiple(tuple(shape), size_multiple)
    if head is not None:
        check_head(head, spec.task)
    if loaded.was_training:
        say(f"{spec.name} was in training mode: exported and verified in eval mode, as it is deployed "
            f"({', '.join(loaded.was_training)} use their running statistics or are off; call model.eval() in the "
            "factory to say so)")
    check_export_fits(loaded, verification_shapes(tuple(shape), dynamic, size_multiple or spec.size_multiple),
                      f"exporting {spec.name} at {shape_text(shape)} (and verifying it)",
                      "give a smaller --input-shape (a dynamic export runs at larger sizes too), or free memory")
    sample = torch.randn(shape)
    input_names = spec.input_names
    loaded, output_names, output_shapes = model_outputs(loaded, tuple(shape))
    if head is not None:
        check_head(head, spec.task, output_shapes[0] if output_shapes else None)
    shapes, multiple = size_checked_shapes(loaded, tuple(shape), dynamic, size_multiple, say)
    traced, widened = traced_model(loaded, tuple(shape), say)
    model_dtype = module_dtype(loaded.module)
    tolerance = tolerance or Tolerance.for_dtype(model_dtype)
    started = time.perf_counter()
    with scratch_folder("deploykit-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        say(f"exporting {spec.name} with the {chosen} exporter (opset {opset}, "
            f"{'dynamic batch/height/width' if dynamic else 'static shape'})")
        kwargs = dict(opset=opset, input_names=input_names, output_names=output_names, dynamic=dynamic)
        trace_warnings = run_exporter(chosen, traced, sample, raw, **kwargs)
        exported = onnx.load(str(raw))
        check_opset_written(exported, chosen, opset)
        pin_output_dims(exported, output_shapes, dynamic, shape)
        model = check_graph(exported, traced.module)
        check_reads_input(model, spec.name)
    meta = export_metadata(loaded, shape, chosen, input_names, output_names)
    write_metadata(model, meta)
    say(f"verifying against PyTorch on shapes {', '.join('x'.join(map(str, s)) for s in shapes)}")
    torch_outputs: TorchOutputs = []
    checks = verify_against_torch(loaded, model.SerializeToString(), shapes, tolerance, torch_outputs=torch_outputs)
    simplified, note = False, "simplification off"
    if simplify:
        slim = simplify_graph(model)
        if slim is None:
            note = "onnxslim not installed or failed; kept the exported graph"
        else:
            write_metadata(slim, meta)
            slim_checks = verify_against_torch(loaded, slim.SerializeToString(), shapes, tolerance,
                                               torch_outputs=torch_outputs)
            if all(c.passed for c in slim_checks) or not all(c.passed for c in checks):
                before, after = len(model.graph.node), len(slim.graph.node)
                model, checks, simplified = slim, slim_checks, True
                note = f"simplified with onnxslim: {before} -> {after} nodes, parity re-verified"
            else:
                note = "onnxslim changed the outputs beyond tolerance; kept the exported graph"
    result = ExportResult(
        path=Path(out), exporter=chosen, opset=opset, dynamic=dynamic, input_shape=tuple(shape),
        input_names=tuple(input_names), output_names=tuple(output_names), simplified=simplified,
        simplify_note=note, seconds=time.perf_counter() - started, checks=checks, size_multiple=multiple,
        head=head, model_dtype=str(model_dtype).removeprefix("torch."), as_float32=widened,
        trace_warnings=tuple(trace_warnings),
    )
    if not result.passed:
        return result  # the caller reports the mismatch; nothing is written
    if head is not None:
        say(apply_head(model, head, spec.task, spec.num_classes).note)
    with atomic_output(out, force=force, needs=model.ByteSize()) as tmp_path:
        onnx.save(model, str(tmp_path))
    return result
