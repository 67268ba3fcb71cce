"""The full self-test's tiny-graph checks: the layers TensorRT's INT8 rules are about, and the build and run
options a first GPU run should prove.

`tiny_decoder` (seeded random weights, 64x64, dynamic batch/height/width) has a strided encoder, a residual Add,
a Concat of two branches, a ConvTranspose (x2) and a bilinear Resize (x2): the places where TensorRT's Q/DQ
placement matters (ConvTranspose weights on axis 0, the residual's skip quantized, one scale across a Concat, no
INT8 Resize; see the shared TensorRT notes). Checks, each through build-engine's own path:
- FP16, INT8 with an FP32 remainder and INT8 with an FP16 remainder (--int8-float): parity with ONNX Runtime
  and the precision audit's share;
- a version-compatible FP16 build with --require-precision (its audit must load the plan with host code allowed);
- an `--head argmax` export built and run (a uint8 class map TensorRT can produce: ArgMax -> float -> uint8);
- the FP16 engine's profile (min/opt/max below) run at each of the three shapes from CUDA graphs, against ONNX
  Runtime at that shape, and a shape outside the profile, which must fail with a clear error;
- the FP16 build wrote a timing cache; building the same graph again reads it back, and no new entries means
  every tactic it timed came from the cache.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deploykit.backends.base import resolve_backend
from deploykit.backends.tensorrt.build import TensorRTBuildOptions
from deploykit.build import build_artifact
from deploykit.doctor import selftest_checks
from deploykit.doctor.selftest_checks import (
    Session,
    Verdict,
    audit_check,
    engine_outputs,
    parity,
    reference_outputs,
    selftest_images,
)
from deploykit.errors import InputError, first_line
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.metrics.numeric import numeric_metrics
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import precision_of
from deploykit.zoo.sources import load_model

SIZE = (64, 64)
PROFILE = ((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 96, 96))  # min, opt, max; height and width multiples of 4
OUTSIDE = (1, 3, 160, 160)
FP16, INT8_FP32, INT8_FP16 = "tiny fp16 (dynamic, timing cache)", "tiny int8, FP32 remainder", \
    "tiny int8, FP16 remainder"
EXPORT = "tiny export (ConvTranspose, Add, Concat, Resize)"


class TinyDecoder(nn.Module):
    def __init__(self, classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.down1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.side = nn.Conv2d(width, width, 1)
        self.head = nn.Conv2d(2 * width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = F.relu(self.down1(x))  # H/2
        s2 = F.relu(self.down2(s1))  # H/4
        r = s2 + F.relu(self.block(s2))  # residual Add
        u = F.relu(self.up(r))  # ConvTranspose back to H/2
        c = torch.cat([u, self.side(s1)], dim=1)  # Concat
        return F.interpolate(self.head(c), scale_factor=2.0, mode="bilinear", align_corners=False)  # Resize


def tiny_decoder() -> nn.Module:
    """The tiny graph (a `module:factory` source for deploykit.zoo.sources.load_model), seeded."""
    torch.manual_seed(0)
    return TinyDecoder().eval()


TINY = f"{__name__}:tiny_decoder"


def tiny_checks(session: Session, folder: Path, calib_n: int) -> None:
    source, headed, images = folder / "tiny.onnx", folder / "tiny.argmax.onnx", folder / "tiny.images.npy"
    cache = folder / "tiny.timing.cache"
    session.check(EXPORT, partial(_export, session, source, headed, images, calib_n))
    fp16 = folder / "tiny.fp16.plan"
    session.check(FP16, partial(_precision, session, source, fp16, "fp16", images, calib_n, cache=cache),
                  needs=[EXPORT])
    for name, remainder in ((INT8_FP32, "fp32"), (INT8_FP16, "fp16")):
        plan = folder / f"tiny.int8.{remainder}.plan"
        session.check(name, partial(_precision, session, source, plan, "int8", images, calib_n, remainder=remainder),
                      needs=[EXPORT])
    session.check("version-compatible FP16, --require-precision",
                  partial(_version_compatible, session, source, folder / "tiny.vc.plan", images, calib_n),
                  needs=[EXPORT])
    session.check("argmax head (uint8 class map)", partial(_argmax, session, headed, folder / "tiny.argmax.plan"),
                  needs=[EXPORT])
    session.check("dynamic shapes min/opt/max, CUDA graphs", partial(_dynamic, source, fp16), needs=[FP16])
    session.check("shape outside the profile", partial(_outside, fp16), needs=[FP16])
    session.check("timing cache read back", partial(_cache_again, session, source, folder / "tiny.again.plan",
                                                    images, calib_n, cache), needs=[FP16])


def _export(session: Session, source: Path, headed: Path, images: Path, count: int) -> Verdict:
    for out, head in ((source, None), (headed, "argmax")):
        onnx_from_torch(load_model(TINY), out, input_shape=(1, 3, *SIZE), simplify=False, head=head,
                        progress=session.say)
    x, _what = selftest_images(SIZE, count, seed=100)
    np.save(images, x)
    session.made["tiny feed"], session.made["tiny reference"] = x[:1], reference_outputs(source, x[:1])
    return Verdict(True, "exported twice (logits, and --head argmax), checked against PyTorch")


def _options(**kwargs: Any) -> TensorRTBuildOptions:
    low, opt, high = PROFILE
    return TensorRTBuildOptions(min_shapes={"input": low}, opt_shapes={"input": opt}, max_shapes={"input": high},
                                **kwargs)


def _cosine(precision: str) -> float:
    """The minimum logit cosine of the precision's entry (its selftest_bounds)."""
    bounds = precision_of(precision).selftest_bounds
    assert bounds is not None
    return bounds[0]


def _build(session: Session, source: Path, plan: Path, precision: str, images: Path | None, count: int, *,
           remainder: str | None = None, **options: Any) -> dict[str, Any]:
    calibration = CalibrationOptions(data=str(images) if images else None, n=count, int8_float=remainder,
                                     use_cache=False)  # calibrate for real; leave no cache behind
    engine, note = resolve_backend("tensorrt")
    built = build_artifact(source, plan, precision=precision_of(precision), backend=engine, backend_note=note,
                           calibration=calibration, options=_options(**options), force=True, progress=session.say)
    session.made[f"engine:{plan.stem}"] = plan
    return dict(built.sidecar.build_options)


def _precision(session: Session, source: Path, plan: Path, precision: str, images: Path, count: int, *,
               remainder: str | None = None, cache: Path | None = None) -> Verdict:
    record = _build(session, source, plan, precision, images, count, remainder=remainder,
                    timing_cache=str(cache) if cache else None)
    checked = parity(plan, session.made["tiny reference"], session.made["tiny feed"], (_cosine(precision), 0.0),
                     pixels=False)
    audit = audit_check(plan, precision)
    float_ops = record.get("float_remainder") or {}
    rest = f"; float ops outside INT8 run in {str(float_ops['kind']).upper()}" if float_ops else ""
    entries = (record.get("timing_cache_record") or {}).get("written_entries")
    cached = f"; timing cache written ({entries} entries)" if cache is not None else ""
    return Verdict(checked.passed and audit.passed, f"{checked.detail}; audit {audit.detail}{rest}{cached}",
                   {**checked.figures, **audit.figures, "float_remainder": float_ops})


def _version_compatible(session: Session, source: Path, plan: Path, images: Path, count: int) -> Verdict:
    _build(session, source, plan, "fp16", images, count, version_compatible=True,
           require_precision=selftest_checks.AUDIT_SHARE)
    checked = parity(plan, session.made["tiny reference"], session.made["tiny feed"], (_cosine("fp16"), 0.0),
                     pixels=False)
    audit = audit_check(plan, "fp16")
    return Verdict(checked.passed and audit.passed, f"built, audited and loaded (host code allowed): "
                                                    f"{checked.detail}; audit {audit.detail}", checked.figures)


def _argmax(session: Session, headed: Path, plan: Path) -> Verdict:
    _build(session, headed, plan, "fp32", None, 1)
    x = session.made["tiny feed"]
    want, got = reference_outputs(headed, x), engine_outputs(plan, x)
    agreement = float(np.mean(want == got))
    return Verdict(got.dtype == np.uint8 and agreement >= 0.99,
                   f"{got.dtype} class map, {agreement:.4f} of pixels equal to ONNX Runtime's (>= 0.99)",
                   {"pixel_agreement": agreement})


def _dynamic(source: Path, plan: Path) -> Verdict:
    cosines = {}
    for label, shape in zip(("min", "opt", "max"), PROFILE, strict=True):
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        got = engine_outputs(plan, x, cuda_graph=True)
        cosines[label] = numeric_metrics(reference_outputs(source, x), got).cosine
    worst = min(cosines.values())
    shown = ", ".join(f"{k} {'x'.join(map(str, s))}: {cosines[k]:.5f}" for k, s in zip(cosines, PROFILE, strict=True))
    return Verdict(worst >= _cosine("fp16"), f"cosine vs ONNX Runtime at {shown} (>= {_cosine('fp16')})", cosines)


def _outside(plan: Path) -> Verdict:
    x = np.zeros(OUTSIDE, np.float32)
    try:
        engine_outputs(plan, x)
    except InputError as exc:
        said = first_line(exc)
        return Verdict("outside the engine's optimization profile" in said, f"refused clearly: {said}")
    return Verdict(False, f"a {'x'.join(map(str, OUTSIDE))} input ran on an engine whose profile ends at "
                          f"{'x'.join(map(str, PROFILE[2]))}")


def _cache_again(session: Session, source: Path, plan: Path, images: Path, count: int, cache: Path) -> Verdict:
    record = dict(_build(session, source, plan, "fp16", images, count, timing_cache=str(cache))
                  ["timing_cache_record"] or {})
    read, added = record.get("read_entries"), None
    if record.get("written_entries") is not None and read is not None:
        added = int(record["written_entries"]) - int(read)
    if record.get("status") != "read":
        return Verdict(False, f"the second build did not read the cache ({record.get('status')})", record)
    if added is None:
        return Verdict(True, f"read back ({record.get('read_bytes')} bytes); this TensorRT cannot count its entries "
                             "(ITimingCache.queryKeys), so hits are not shown", record)
    return Verdict(added == 0 and bool(read), f"read back {read} entries; the same graph built again added {added} "
                                              "(0: every tactic it timed was a cache hit)", record)
