"""What the exporter traces and how: the user's model made exportable (flat outputs, one input, float32), and
the two torch.onnx exporters, run so that what they or the model raise or print is said in one line."""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import deploykit
from deploykit.backends.torch import ForwardBytes, as_model_input, forward_bytes, module_dtype, outputs_as_tuple
from deploykit.environment import check_memory
from deploykit.errors import ExportError, InputError, UserCodeError, first_line, not_theirs, size_text
from deploykit.metrics.numeric import COMPARED_BYTES, OUTPUT_BYTES
from deploykit.types import Progress
from deploykit.zoo import nearest_side
from deploykit.zoo.sources import LoadedModel, is_user_model, model_code

DEFAULT_OPSET = 18  # TensorRT 10.x parses opsets 9-24; 18 has Resize antialias fixes and ORT covers it fully

REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def takes_only_its_input(module: torch.nn.Module) -> bool:
    """Whether `module`'s forward has no parameter besides its input. Optional ones (`scale=1.0`) would be
    traced as graph inputs of their default's value, which no runtime is then fed."""
    if isinstance(module, torch.jit.ScriptModule):  # its graph's inputs are fixed; a wrapper cannot be traced
        return True
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # no readable signature (a C extension's forward): wrapped to be safe
        return False
    return len(parameters) <= 1


class FlatOutputs(torch.nn.Module):
    """The user's model called with its input alone, its dict/dataclass/nested outputs returned as a flat tuple
    (the form both exporters and the runners take), in the order of `named_outputs`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return outputs_as_tuple(self.model(x))


class _ComputesIn(torch.nn.Module):
    """A reduced-precision model that cannot run widened (its forward casts to its own dtype): fed float32 and
    giving float32, as every deploykit artifact is, and computing in its own dtype in between."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = outputs_as_tuple(self.model(x.to(self.dtype)))
        return tuple(t.float() if t.is_floating_point() else t for t in outputs)


def traced_model(loaded: LoadedModel, shape: tuple[int, ...], say: Progress) -> tuple[LoadedModel, bool]:
    """The model the exporter traces, and whether it is a widened copy. A float16, bfloat16 or float64 model
    (`.half()`) is exported as its float32 copy: widening float16/bfloat16 weights is exact, every deploykit
    artifact takes and gives float32, and FP16 is build-engine's precision pass (with its float32 fallback for
    overflowing nodes), which a float16 graph would leave nothing to choose for. A model that cannot run
    widened (its forward casts to its own dtype) is exported as it computes."""
    dtype = module_dtype(loaded.module)
    if dtype == torch.float32:
        return loaded, False
    name = str(dtype).removeprefix("torch.")
    try:
        widened: LoadedModel | None = replace(loaded, module=copy.deepcopy(loaded.module).float())
    except Exception:  # a module that cannot be copied is exported as it computes
        widened = None
    if widened is not None and rejects(widened, shape) is None:
        judged = "float32's tolerance" if dtype not in REDUCED_PRECISION else f"{name}'s precision"
        how = "rounded to float32" if dtype.itemsize > 4 else "widened exactly"
        say(f"{loaded.spec.name} computes in {name}: exported in float32 (its weights {how}) and verified "
            f"against your {name} model within {judged}; `build-engine --fp16` builds an FP16 artifact")
        return widened, True
    say(f"{loaded.spec.name} computes in {name} and does not run widened to float32; exported as it computes, "
        f"in {name} between float32 input and output, and verified within {name}'s precision")
    return replace(loaded, module=_ComputesIn(loaded.module, dtype).eval()), False


def rejects(loaded: LoadedModel, shape: tuple[int, ...]) -> BaseException | None:
    try:
        with torch.inference_mode():
            loaded.module(as_model_input(torch.randn(shape), loaded.module))
    except BaseException as exc:  # user code raises anything, SystemExit included
        if not_theirs(exc):
            raise
        return exc
    return None


# Memory of a run beyond its activations as the probe's module outputs count them (backends.torch.forward_bytes):
# tensors made between modules and kernels' scratch. Measured (resident set growth of a forward): MSI-Net and U-Net
# 1.9-2.2 times what the probe counts. An export adds the trace's forward and ONNX Runtime's arena
# (deploykit.graph.macs.ARENA_GROWTH): resident growth over exports at two sizes, per input pixel, MSI-Net 1097 B
# where the probe counts 268 B of activations, 80 B of inputs and 56 B per output value (3.8 times the
# activations); the tiny test model 233 B where it counts 36 B, 24 B and 168 B (1.1 times).
TORCH_RUN_COPIES = 2
EXPORT_COPIES = 4
WEIGHT_COPIES = 4  # the module, the ONNX graph, its simplified copy, an ONNX Runtime session
PROBE_PIXELS = 256 * 256  # a user model's probe: about this many pixels, its sides scaled alike


def scaled_forward(loaded: LoadedModel, shape: tuple[int, ...]) -> ForwardBytes | None:
    """What one forward pass at `shape` holds (module outputs alive at once, output values), measured on one pass
    at a smaller size the model takes (its default size, or `shape` scaled down) and scaled by pixel count: to
    refuse, before it runs, a size that cannot fit. None when `shape` is no larger than that (the zoo's default
    sizes, tiny test models: nothing measured, no cost) or the model does not run at the probe's size."""
    probe = _probe_shape(loaded, shape)
    if probe is None:
        return None
    try:  # a user's forward may raise anything (sys.exit too): model_code makes it theirs, an Exception
        with model_code(loaded.spec):
            measured = forward_bytes(loaded.module, torch.randn(probe))
    except Exception:  # a guard, never a reason to refuse: the run itself says what the model cannot take
        return None
    scale = math.prod(shape) / math.prod(probe)
    return ForwardBytes(int(measured.peak * scale), int(measured.output_values * scale))


def check_export_fits(loaded: LoadedModel, shapes: Sequence[tuple[int, ...]], what: str, fix: str) -> None:
    """Refuse, before the long work, an export whose runs at `shapes` (the export and verification shapes) need
    more memory than is available: the allocations would succeed under overcommit and the OOM killer end the
    export without a word after minutes. `what` names the export, `fix` the cure."""
    largest = max(shapes, key=math.prod)
    measured = scaled_forward(loaded, largest)
    if measured is None:
        return
    pixels = sum(math.prod(s) for s in shapes)  # the outputs of every run are held until compared
    activations = EXPORT_COPIES * measured.peak
    outputs = int(measured.output_values * pixels / math.prod(largest)) * (2 * OUTPUT_BYTES + COMPARED_BYTES)
    weights = WEIGHT_COPIES * sum(p.numel() * p.element_size() for p in loaded.module.parameters())
    check_memory(2 * 4 * pixels + activations + outputs + weights, what, fix,
                 f"activations {size_text(activations)}, outputs and their comparison {size_text(outputs)}, "
                 f"weights {size_text(weights)}")


def _probe_shape(loaded: LoadedModel, largest: tuple[int, ...]) -> tuple[int, ...] | None:
    """A batch-1 shape smaller than `largest` that the model takes, to measure activations on; None when
    `largest` is itself no larger (nothing to gain) or no such shape is known."""
    if len(largest) != 4:
        return None
    spec, (_, channels, height, width) = loaded.spec, largest
    default_height, default_width = spec.input_size
    if not is_user_model(spec) and math.prod(largest) <= 2 * 3 * (default_height + 64) * (default_width + 64):
        return None  # the zoo's default size and its verification shapes fit where the zoo is tested
    if math.prod(largest) <= 2 * 3 * PROBE_PIXELS:
        return None
    factor = math.sqrt(height * width / PROBE_PIXELS)
    probe_height, probe_width = (_side_taken(loaded, math.ceil(d / factor)) for d in (height, width))
    if probe_height is None or probe_width is None or probe_height * probe_width >= height * width:
        return None
    return (1, channels, probe_height, probe_width)


def _side_taken(loaded: LoadedModel, side: int) -> int | None:
    """The smallest height (and width) from `side` up that the model takes: a multiple of its size multiple,
    or what its size rule allows (U-Net: 16k+60, stepping by its size multiple 16); None when none is near."""
    multiple = max(loaded.spec.size_multiple, 1)

    def takes(candidate: int) -> bool:
        if loaded.spec.size_rule is None and candidate % multiple:
            return False
        try:
            loaded.spec.check_size(candidate, candidate, loaded.options)
        except InputError:
            return False
        return True

    return nearest_side(takes, side, "up", 64 * multiple)


def _torchscript_export(module: torch.nn.Module, sample: torch.Tensor, path: Path, *, opset: int,
                        input_names: Sequence[str], output_names: Sequence[str], dynamic: bool) -> list[str]:
    axes: dict[str, dict[int, str]] | None = None
    if dynamic:
        axes = {name: {0: "batch", 2: "height", 3: "width"} for name in (*input_names, *output_names)}
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        torch.onnx.export(module, (sample,), str(path), dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=axes, do_constant_folding=True)
    return _trace_warnings(caught)


def _trace_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """The tracer's warnings about the model's own code ("Converting a tensor to a Python boolean might cause
    the trace to be incorrect"), as "file:line: message": where a trace may have fixed a value-dependent path."""
    library = tuple(str(Path(m.__file__).resolve().parent) for m in (torch, deploykit) if m.__file__)
    notes = []
    for caught_warning in caught:
        if issubclass(caught_warning.category, torch.jit.TracerWarning) \
                and not str(Path(caught_warning.filename).resolve()).startswith(library):
            text = str(caught_warning.message).split(". ")[0]
            notes.append(f"{Path(caught_warning.filename).name}:{caught_warning.lineno}: {text}")
    return list(dict.fromkeys(notes))


def _dynamo_export(module: torch.nn.Module, sample: torch.Tensor, path: Path, *, opset: int,
                   input_names: Sequence[str], output_names: Sequence[str], dynamic: bool) -> list[str]:
    shapes: Any = None
    if dynamic:
        dim = torch.export.Dim.DYNAMIC
        shapes = ({0: dim, 2: dim, 3: dim},)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (sample,), dynamo=True, opset_version=opset,
                                    input_names=list(input_names), output_names=list(output_names),
                                    dynamic_shapes=shapes, optimize=True, verbose=False)
        assert program is not None
        program.save(str(path))
    return []  # torch.export refuses value-dependent Python code itself


EXPORTERS = {"torchscript": _torchscript_export, "dynamo": _dynamo_export}


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """File descriptors 1 and 2 sent to the null device: torch's TorchScript exporter prints its whole IR graph
    from C++ (to stdout, past sys.stdout, so into --json's document) when an operator does not export (its
    setup_onnx_logging switches the ONNX log on whatever `verbose` says); the failure is deploykit's one line."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        with open(os.devnull, "wb") as null:
            for fd in (1, 2):
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, kept in zip((1, 2), saved, strict=True):
            os.dup2(kept, fd)
            os.close(kept)


def run_exporter(name: str, loaded: LoadedModel, sample: torch.Tensor, path: Path, **kw: Any) -> list[str]:
    """Export to `path`; the tracer's warnings about the model's code (see `_trace_warnings`)."""
    try:
        with _native_output_silenced():
            return EXPORTERS[name](loaded.module, sample, path, **kw)
    except Exception as exc:  # exporters raise many unrelated types
        raise ExportError(f"the {name} exporter failed on {loaded.spec.name}: {_exporter_reason(exc)}"
                          f"{_exporter_hint(name, loaded.module, exc, kw.get('opset'))}") from exc
    except BaseException as exc:  # sys.exit() in a forward being traced
        if not_theirs(exc):
            raise
        if not is_user_model(loaded.spec):
            raise
        raise UserCodeError.from_exception(f"your model {loaded.spec.name} (while the {name} exporter traced "
                                           "it)", exc) from exc


def _exporter_reason(exc: BaseException) -> str:
    """The first line of the innermost cause (the dynamo exporter's own first line is advice on filing a
    report; its cause names the operator), without terminal colour codes."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    reason = re.sub(r"\x1b\[[0-9;]*m", "", first_line(exc, 600))
    # the TorchScript exporter's appeal to file an issue, and the IR value it ends with, say nothing to the user
    reason = re.sub(r"\s*Please feel free to request support.*$|\s*\[Caused by the value .*$", "", reason).rstrip(". ")
    return reason if len(reason) <= 300 else reason[:299] + "…"


def _exporter_hint(name: str, module: torch.nn.Module, exc: BaseException, opset: int | None) -> str:
    """How to get past an exporter failure that has a known way round."""
    if script_hint(module):
        return script_hint(module)
    reason = _exporter_reason(exc)
    if name == "torchscript" and "onnx_opset_version" in reason:
        return f"; the torchscript exporter does not write opset {opset}: use a lower --opset or --exporter dynamo"
    if name == "torchscript" and "ONNX export of operator" in reason and opset is not None and opset < DEFAULT_OPSET:
        return (f"; opset {opset} has no form of this operator that the torchscript exporter knows: use a newer "
                f"--opset ({DEFAULT_OPSET} is the default)")
    if name == "torchscript" and "is not supported" in reason:
        return "; try --exporter dynamo, which exports more operators (it decomposes them), or avoid the operator"
    if "data-dependent expression" in reason:
        where = _model_line(exc, module)
        at = f" (at {where})" if where else ""
        return (f"; the forward branches on a tensor's value{at}: compute both sides and choose with torch.where, or "
                "use torch.cond")
    if "No ONNX function found" in reason:
        return ("; ONNX has no equivalent of this operator: compute it with other operators, or leave it out of the "
                "exported model (run it as post-processing)")
    return ""


def script_hint(module: torch.nn.Module) -> str:
    """For a TorchScript module ("" for any other), what to give instead when its export fails: a scripted
    forward's shapes and control flow are not what the exporters trace well."""
    if not isinstance(module, torch.jit.ScriptModule) and not any(
            isinstance(m, torch.jit.ScriptModule) for m in module.children()):
        return ""
    return ("; the model is a TorchScript module (torch.jit.script or trace), which the exporters take only in "
            "part: return the torch.nn.Module from before scripting")


def _model_line(exc: BaseException, module: torch.nn.Module) -> str:
    """"file.py:line" of the last frame in the model's own source files among `exc`'s tracebacks and those of
    its causes ("" when none is): where the model's code was when an exporter gave up on it."""
    files = set()
    for part in module.modules():
        with contextlib.suppress(TypeError, OSError):
            files.add(inspect.getsourcefile(type(part)))
    found, seen = "", set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            if frame.filename in files:
                found = f"{Path(frame.filename).name}:{frame.lineno}"
        current = current.__cause__ or current.__context__
    return found


def checker_hint(module: torch.nn.Module, reason: str) -> str:
    """What to do about an exported graph the ONNX checker refuses, where it is known ("" otherwise)."""
    reduced = re.search(r"unsupported type: tensor\((bfloat16|float16)\)", reason)
    if reduced:
        return (f"; the graph computes in {reduced[1]} where the ONNX operator takes no such type (a torch.autocast "
                "block or a cast to a reduced precision in the forward): export the model's float32 computation "
                "without it; `build-engine --fp16` makes the FP16 artifact")
    return script_hint(module)
