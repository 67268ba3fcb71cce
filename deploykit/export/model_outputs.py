"""The model in PyTorch before export: one forward pass, its outputs' names and shapes, and its determinism."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from deploykit.backends.torch import as_model_input, module_dtype, named_outputs
from deploykit.errors import DeployKitError, ExportError, InputError, first_line, out_of_memory
from deploykit.export.results import Tolerance, shape_text
from deploykit.exporters import FlatOutputs, takes_only_its_input
from deploykit.metrics.numeric import numeric_metrics
from deploykit.zoo.sources import LoadedModel, is_user_model, model_code


def _run_model(loaded: LoadedModel, x: torch.Tensor) -> object:
    """One forward pass on a copy of `x` (a forward may change its input in place); what a user's model raises is
    theirs (exit 2, their line). A size the zoo spec's rule refuses is refused before it, in the rule's words."""
    shape = tuple(x.shape)
    if len(shape) == 4:
        loaded.spec.check_size(shape[2], shape[3], loaded.options)
    try:
        with model_code(loaded.spec, f" (on input {shape_text(shape)})"), torch.inference_mode():
            return loaded.module(as_model_input(x.clone(), loaded.module))
    except Exception as exc:  # a zoo model that cannot take this shape
        if isinstance(exc, DeployKitError) or out_of_memory(exc):  # the CLI says an allocation failed as such
            raise
        first = first_line(exc, 300)
        h, w = loaded.spec.input_size
        raise ExportError(f"{loaded.spec.name} cannot run on input {list(shape)}: {first}; give an --input-shape "
                          f"it takes, e.g. {shape[0]},{shape[1]},{h},{w} (its default size)") from exc


def model_outputs(loaded: LoadedModel, shape: tuple[int, ...]) -> tuple[LoadedModel, tuple[str, ...],
                                                                         list[tuple[int, ...]]]:
    """The model to export (wrapped when it returns a dict, dataclass or nested tuple, or its forward has more
    parameters than its input), its output names and shapes. Dict keys and dataclass fields name the outputs; a
    zoo model's spec names plain ones."""
    x = torch.randn(shape)
    result = _run_model(loaded, x)
    try:
        named = named_outputs(result)
    except TypeError as exc:
        raise ExportError(f"{loaded.spec.name}: {exc}; the exported graph gives tensors only: return the tensors "
                          "alone, or wrap the model in a module whose forward does") from exc
    if is_user_model(loaded.spec):  # zoo models are deterministic (tested); only a user's model costs this pass
        _check_deterministic(loaded, x, named)
    shapes = [tuple(t.shape) for t in named.values()]
    plain = isinstance(result, torch.Tensor) or (
        isinstance(result, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in result))
    names = tuple(named)
    if plain and len(loaded.spec.output_names) == len(named):
        names = tuple(loaded.spec.output_names)
    if plain and takes_only_its_input(loaded.module):
        return loaded, names, shapes
    return replace(loaded, module=FlatOutputs(loaded.module).eval()), names, shapes


def _check_deterministic(loaded: LoadedModel, x: torch.Tensor, first: Mapping[str, torch.Tensor]) -> None:
    """Refuse a model whose forward gives different outputs on the same input (torch.rand in it, dropout with
    training=True): no export can match it, and a verification failure would blame the exporter. Judged by the
    tolerance the export is; outputs holding NaN or infinity are left to the verification's own check."""
    again = named_outputs(_run_model(loaded, x))
    tolerance = Tolerance.for_dtype(module_dtype(loaded.module))
    for name, value in first.items():
        a = value.detach().float().numpy()
        b = again[name].detach().float().numpy() if name in again else None
        if not np.isfinite(a).all() or (b is not None and a.shape == b.shape and tolerance.passes(
                numeric_metrics(a, b, atol=tolerance.atol, rtol=tolerance.rtol), float(np.abs(a).max(initial=0)))):
            continue
        differs = f"differs by up to {np.abs(a - b).max():.3g}" if b is not None and a.shape == b.shape else "changes"
        raise InputError(f"{loaded.spec.name} gives different outputs for the same input in PyTorch itself (output "
                         f"{name!r} {differs} between two runs on one random input {shape_text(x.shape)}), so no "
                         "export can match it: its forward draws random numbers (torch.rand or randn, dropout with "
                         "training=True, added noise); make it deterministic in eval mode, e.g. "
                         "F.dropout(x, p, training=self.training)")
