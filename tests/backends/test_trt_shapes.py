"""Optimization profiles from an ONNX model's dynamic dimensions (GPU-free)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.backends.tensorrt.shapes import (
    ShapeRange,
    derive_profile,
    follow_size_rule,
    parse_shape_specs,
    pin_channels,
)
from deploykit.errors import ConfigConflict, InputError
from deploykit.runner import InputSizes
from deploykit.zoo import get_model_spec


def _model(*inputs: tuple[str, list[int | str]]) -> onnx.ModelProto:
    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Identity", [inputs[0][0]], ["y"])
    return helper.make_model(helper.make_graph([node], "g", values, [out]))


DYNAMIC = ("input", ["batch", 3, "height", "width"])


def test_parse_shape_specs_with_and_without_names() -> None:
    assert parse_shape_specs(["input:1x3x512x512", "2x3x64x32"], "--opt-shape") == {
        "input": (1, 3, 512, 512), "": (2, 3, 64, 32)}
    with pytest.raises(InputError, match="--min-shape"):
        parse_shape_specs(["input:1x3xbig"], "--min-shape")
    with pytest.raises(InputError, match="twice"):
        parse_shape_specs(["a:1x1", "a:2x2"], "--max-shape")


def test_defaults_from_input_size_rounded_to_the_size_multiple() -> None:
    profile = derive_profile(_model(DYNAMIC), input_size=(513, 420), size_multiple=32)
    # opt to the nearest multiple (416), min rounded up (208 -> 224), max down (832)
    assert profile["input"] == ShapeRange((1, 3, 256, 224), (1, 3, 512, 416), (4, 3, 1024, 832))


def test_defaults_without_a_multiple() -> None:
    profile = derive_profile(_model(DYNAMIC), input_size=(65, 64))
    assert profile["input"] == ShapeRange((1, 3, 33, 32), (1, 3, 65, 64), (4, 3, 130, 128))


def test_fixed_batch_is_kept_and_static_inputs_need_no_profile() -> None:
    profile = derive_profile(_model(("input", [1, 3, "h", "w"])), input_size=(64, 64))
    assert profile["input"].min[0] == profile["input"].max[0] == 1
    assert derive_profile(_model(("input", [1, 3, 64, 64]))) == {}


def test_user_shapes_override_and_complete_from_opt() -> None:
    profile = derive_profile(_model(DYNAMIC), opt_shapes={"": (2, 3, 128, 96)}, max_shapes={"input": (8, 3, 256, 256)})
    assert profile["input"] == ShapeRange((1, 3, 64, 48), (2, 3, 128, 96), (8, 3, 256, 256))


def test_only_min_and_max_uses_the_model_size_when_inside() -> None:
    profile = derive_profile(_model(DYNAMIC), min_shapes={"": (1, 3, 32, 32)}, max_shapes={"": (1, 3, 512, 512)},
                             input_size=(64, 64))
    assert profile["input"].opt == (1, 3, 64, 64)


def test_conflicts_are_reported() -> None:
    with pytest.raises(ConfigConflict, match="min <= opt <= max"):
        derive_profile(_model(DYNAMIC), opt_shapes={"": (1, 3, 64, 64)}, max_shapes={"": (1, 3, 32, 32)})
    with pytest.raises(ConfigConflict, match="fixed to 3"):
        derive_profile(_model(DYNAMIC), opt_shapes={"": (1, 4, 64, 64)})
    with pytest.raises(ConfigConflict, match="fixes its shape"):
        derive_profile(_model(("input", [1, 3, 64, 64])), opt_shapes={"": (1, 3, 32, 32)})
    with pytest.raises(InputError, match="inputs are"):
        derive_profile(_model(DYNAMIC), opt_shapes={"image": (1, 3, 64, 64)})


def test_dynamic_input_without_metadata_asks_for_a_shape() -> None:
    with pytest.raises(InputError, match="--opt-shape input:"):
        derive_profile(_model(DYNAMIC))


def test_default_min_is_raised_when_the_model_cannot_run_there() -> None:
    import numpy as np
    from onnx import numpy_helper

    from deploykit.backends.tensorrt.shapes import fit_default_min

    weight = numpy_helper.from_array(np.ones((1, 3, 7, 7), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    profile = derive_profile(model, input_size=(8, 8))
    assert profile["input"].min == (1, 3, 4, 4)
    said: list[str] = []
    assert fit_default_min(model, profile, ["input"], said.append)["input"].min == (1, 3, 8, 8)
    assert said and "--min-shape" in said[0]
    assert fit_default_min(model, profile, [], said.append) == profile  # a min the user gave is kept
    roomy = derive_profile(model, input_size=(32, 32))
    assert fit_default_min(model, roomy, ["input"], said.append) == roomy


def test_defaults_follow_a_zoo_size_rule_and_a_given_shape_it_refuses_names_the_nearest() -> None:
    spec = get_model_spec("unet")
    rule = InputSizes.of_spec(spec, {}).rule
    profile = derive_profile(_model(DYNAMIC), input_size=spec.input_size, size_multiple=spec.size_multiple)
    said: list[str] = []
    fitted = follow_size_rule(profile, {}, rule, said.append)["input"]
    assert (fitted.min[2:], fitted.opt[2:], fitted.max[2:]) == ((300, 300), (572, 572), (1148, 1148)), fitted
    assert said and "size rule" in said[0]
    with pytest.raises(InputError, match=r"--min-shape 1x3x288x288: .*use 284 or 300"):
        follow_size_rule(profile, {"input": ["min"]}, rule, said.append)
    msinet = get_model_spec("msinet")
    low = derive_profile(_model(DYNAMIC), min_shapes={"input": (1, 3, 4, 4)}, input_size=msinet.input_size)
    with pytest.raises(InputError, match="at least 8"):
        follow_size_rule(low, {"input": ["min"]}, InputSizes.of_spec(msinet, {}).rule, said.append)


def test_a_profile_size_beyond_what_tensors_index_is_refused_as_input_shape_is() -> None:
    """--max-shape input:1x3x188x1000000000000 built (the double); --input-shape refuses sizes above 2**31 - 1."""
    with pytest.raises(InputError, match="above 2147483647"):
        parse_shape_specs(["input:1x3x188x1000000000000"], "--max-shape")
    assert parse_shape_specs(["1x3x2147483647x1"], "--max-shape") == {"": (1, 3, 2147483647, 1)}


def _conv_model(channels: int = 1) -> onnx.ModelProto:
    """input (N x ? x H x W) -> Sub(mean) -> Conv whose weights read `channels` channels."""
    values = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "c", "height", "width"])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [onnx.numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "mean"),
             onnx.numpy_helper.from_array(np.ones((2, channels, 3, 3), np.float32), "w")]
    nodes = [helper.make_node("Sub", ["input", "mean"], ["centred"]),
             helper.make_node("Conv", ["centred", "w"], ["y"], name="stem")]
    return helper.make_model(helper.make_graph(nodes, "g", values, [out], initializer=inits))


def test_a_given_channel_count_the_first_convolution_refuses_names_the_option_and_the_model_count() -> None:
    """An ONNX input with a dynamic channel axis: the count its first Conv reads is checked before the build (the
    build would fail in TensorRT), and the default profile uses it instead of 3."""
    with pytest.raises(ConfigConflict, match=r"--max-shape 4x3x64x64 for 'input': the model takes 1 channels .*"
                                             r"'stem'.*give input:4x1x64x64"):
        derive_profile(_conv_model(), opt_shapes={"": (1, 1, 32, 32)}, max_shapes={"": (4, 3, 64, 64)})
    assert derive_profile(_conv_model(), input_size=(32, 32))["input"].opt == (1, 1, 32, 32)


def test_a_given_shape_is_checked_as_the_user_wrote_it() -> None:
    """Against the ONNX's fixed axes, by the option given (not a --min-shape derived from it)."""
    with pytest.raises(ConfigConflict, match=r"--opt-shape 1x4x64x64 for 'input': axis 1 is fixed to 3"):
        derive_profile(_model(DYNAMIC), opt_shapes={"": (1, 4, 64, 64)})


def test_a_dynamic_channel_axis_is_pinned_for_tensorrt() -> None:
    model = _conv_model(channels=1)
    assert pin_channels(model) and model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1
    assert not pin_channels(model)  # nothing left to pin
