"""Verification against PyTorch: ONNX Runtime and PyTorch run on the same random inputs, every output compared."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.torch import TorchRunner
from deploykit.errors import ExportError, InputError
from deploykit.export.results import ShapeCheck, Tolerance, shape_text
from deploykit.metrics.numeric import numeric_metrics
from deploykit.zoo.sources import LoadedModel, user_code_name

_BAKED_SHAPE_HINT = ("the trace fixed a size the model computes from its input (a Python int from x.shape); "
                     "export with --static, or --size-multiple N if the model needs sizes divisible by N, or "
                     "try --exporter dynamo")


def _ort_infer(runner: OnnxRuntimeRunner, feed: dict[str, np.ndarray], shape: Sequence[int]) -> dict[str, np.ndarray]:
    try:
        return runner.infer(feed)
    except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
        text = " ".join(str(exc).split())
        node = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
        reason = re.split(r"was false\. |Status Message: ", text)[-1][:200]
        where = f"{node[1]} node {node[2]}: " if node else ""
        raise ExportError(f"the exported graph fails in ONNX Runtime on input {shape_text(shape)} "
                          f"({where}{reason}): {_BAKED_SHAPE_HINT}") from exc


def _check_output_shapes(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], shape: Sequence[int]) -> None:
    for name, ref in expected.items():
        if got[name].shape != ref.shape:
            raise ExportError(f"on input {shape_text(shape)} the exported graph's {name} is "
                              f"{shape_text(got[name].shape)} where PyTorch's is {shape_text(ref.shape)}: "
                              f"{_BAKED_SHAPE_HINT}")


# Each input PyTorch ran on, with its outputs: an equal input (with the same output names) is not run again
TorchOutputs = list[tuple[np.ndarray, dict[str, np.ndarray]]]


def verify_against_torch(loaded: LoadedModel, onnx_bytes: bytes, shapes: Sequence[tuple[int, ...]],
                         tolerance: Tolerance, seed: int = 0, torch_outputs: TorchOutputs | None = None
                         ) -> list[ShapeCheck]:
    """Run PyTorch and ONNX Runtime on the same random inputs of each shape and compare every output.
    `torch_outputs`: PyTorch's outputs kept from earlier calls, reused for an equal input and filled with new
    ones, so the exported and the simplified graph are checked against one PyTorch run."""
    rng = np.random.default_rng(seed)
    checks = []
    kept: TorchOutputs = [] if torch_outputs is None else torch_outputs
    ort_runner = OnnxRuntimeRunner(onnx_bytes)
    with ort_runner:
        input_spec = ort_runner.input_specs()[0]
        input_name, channels = input_spec.name, input_spec.shape[1] if len(input_spec.shape) == 4 else None
        output_names = [s.name for s in ort_runner.output_specs()]
        with TorchRunner(loaded.module, input_names=(input_name,), output_names=output_names,
                         user_code=user_code_name(loaded.spec),
                         channels=channels if isinstance(channels, int) else None) as torch_runner:
            for shape in shapes:
                x = rng.standard_normal(shape).astype(np.float32)
                feed = {input_name: x}
                expected = next((outputs for seen, outputs in kept if seen.shape == x.shape
                                 and np.array_equal(seen, x) and set(outputs) == set(output_names)), None)
                if expected is None:
                    expected = torch_runner.infer(feed)
                    _check_finite(loaded, expected, shape)
                    kept.append((x, expected))
                got = _ort_infer(ort_runner, feed, shape)
                _check_output_shapes(expected, got, shape)
                metrics = {name: numeric_metrics(expected[name], got[name], atol=tolerance.atol, rtol=tolerance.rtol)
                           for name in output_names}
                passed = all(tolerance.passes(metrics[n], float(np.abs(expected[n]).max())) for n in output_names)
                checks.append(ShapeCheck(tuple(shape), metrics, passed))
    return checks


def _check_finite(loaded: LoadedModel, outputs: Mapping[str, np.ndarray], shape: Sequence[int]) -> None:
    """A model whose PyTorch output holds NaN or infinity gives nothing to verify the export against: bad input
    (the model or its weights), said as such, not reported as ONNX Runtime disagreeing."""
    for name, value in outputs.items():
        bad = ~np.isfinite(value)
        if bad.any():
            what = "NaN" if np.isnan(value).any() else "infinite values"
            raise InputError(f"{loaded.spec.name} gives {what} in PyTorch itself ({bad.mean():.0%} of output {name!r} "
                             f"on a random normal input {'x'.join(map(str, shape))}), so there is nothing to verify "
                             "the export against; check the model and its weights")
