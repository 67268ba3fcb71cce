from pathlib import Path

import pytest

from deploykit.backends.base import backend_of
from deploykit.pipeline.deploy import DeployOptions, default_precisions
from deploykit.precision.table import PRECISIONS


def _opts(**given: object) -> DeployOptions:
    return DeployOptions(source="m", out=Path("o"), **given)  # type: ignore[arg-type]


@pytest.mark.parametrize("names", [("onnxruntime",), ("onnxruntime", "openvino")])
def test_cpu_backends_leave_fp16_out_and_say_why(names: tuple[str, ...]) -> None:
    chosen, why = default_precisions(_opts(), [backend_of(n) for n in names])
    assert chosen == tuple(p for p in PRECISIONS if p != "fp16")
    assert why.startswith("fp16 not built") and "--precisions fp32,fp16,int8" in why


def test_a_gpu_backend_builds_every_precision() -> None:
    assert default_precisions(_opts(), [backend_of("tensorrt")]) == (tuple(PRECISIONS), "")


def test_required_or_asked_fp16_is_built_on_a_cpu() -> None:
    cpu = [backend_of("onnxruntime")]
    assert default_precisions(_opts(require="fp16"), cpu) == (tuple(PRECISIONS), "")
    assert default_precisions(_opts(precisions=("fp16",)), cpu) == (("fp16",), "")
