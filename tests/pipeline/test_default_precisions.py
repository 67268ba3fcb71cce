import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from deploykit.backends.base import backend_of
from deploykit.pipeline.deploy import DeployOptions, default_precisions
from deploykit.precision.table import PRECISIONS


def _opts(**given: object) -> DeployOptions:
    return DeployOptions(source="m", out=Path("o"), **given)  # type: ignore[arg-type]


@given(backends=st.sampled_from([("onnxruntime",), ("onnxruntime", "openvino"), ("tensorrt",)]),
       calib=st.sampled_from([None, "photos", "images/"]), require=st.sampled_from([None, *PRECISIONS]))
def test_without_precisions_every_one_is_built_that_can_pay_off_here(
        backends: tuple[str, ...], calib: str | None, require: str | None) -> None:
    """FP16 only where a backend runs float16 natively (a GPU), INT8 only with calibration data, and whatever
    --require names; each left out is named with the way to build it."""
    chosen, why = default_precisions(_opts(calib_data=calib, require=require), [backend_of(n) for n in backends])
    native = backends == ("tensorrt",)
    expected = [p for p in PRECISIONS if p == require or ((native or p != "fp16") and (calib or p != "int8"))]
    assert chosen == tuple(expected)
    left = [p for p in PRECISIONS if p not in chosen]
    assert re.findall(r"(\w+) not built", why) == left
    assert ("--precisions fp32,fp16,int8" in why) == ("fp16" in left)
    assert ("no --calib-data given" in why) == ("int8" in left)


def test_asked_precisions_are_built_as_asked() -> None:
    cpu = [backend_of("onnxruntime")]
    assert default_precisions(_opts(precisions=("fp16",)), cpu) == (("fp16",), "")


def test_the_reason_fp16_is_left_out_reads_for_one_backend_and_for_two() -> None:
    one = default_precisions(_opts(), [backend_of("onnxruntime")])[1]
    two = default_precisions(_opts(), [backend_of("onnxruntime"), backend_of("openvino")])[1]
    assert "(ONNX Runtime on a CPU runs it as float32" in one, one
    assert "(ONNX Runtime and OpenVINO on a CPU run it as float32" in two, two
