"""The precision audit: inspector JSON of both layouts parsed alike, the audit stored in the sidecar and printed
by build-engine, and --require-precision failing an engine that did not realise the precision asked for (an
"FP16" engine that was 0% FP16: roboflow/rf-detr#1453). Shares under the double come from the ONNX types and
are not TensorRT figures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from deploykit.backends.tensorrt.audit import PrecisionAudit, parse_engine_information, require_precision
from deploykit.backends.tensorrt.build import TensorRTBuildOptions, engine_from_onnx
from deploykit.cli import cli
from deploykit.errors import BuildError, CheckFailed, ConfigConflict
from deploykit.io.metadata import read_metadata, write_metadata
from deploykit.io.sidecar import read_sidecar
from tests.fakes.fixtures import TrtDouble


def _conv(fmt_in: dict[str, str], fmt_out: dict[str, str]) -> dict[str, object]:
    return {"Name": "conv1", "LayerType": "CaskConvolution", "ParameterType": "Convolution", "Kernel": [3, 3],
            "Groups": 1, "Inputs": [{"Name": "x", "Dimensions": [1, 8, 16, 16], **fmt_in}],
            "Outputs": [{"Name": "y", "Dimensions": [1, 4, 16, 16], **fmt_out}]}


TEN = {"Bindings": ["x", "z"], "Layers": [
    _conv({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"},
          {"Format/Datatype": "Row major linear FP16 format"}),
    {"Name": "relu", "LayerType": "PointWiseV2", "Inputs": [{"Name": "y", "Dimensions": [1, 4, 16, 16],
                                                             "Format/Datatype": "Row major linear FP32"}],
     "Outputs": [{"Name": "z", "Dimensions": [1, 4, 16, 16], "Format/Datatype": "Row major linear FP32"}]},
    {"Name": "shape", "LayerType": "Shape", "Inputs": [{"Name": "z", "Format/Datatype": "Row major linear FP32"}],
     "Outputs": [{"Name": "s", "Dimensions": [4], "Format/Datatype": "Row major linear Int64 format"}]}]}
ELEVEN = {"I/O Tensors": [{"Name": "x", "IOMode": "Input", "DataType": "Half"}], "Layers": [
    _conv({"Format": "Row major linear format (kLINEAR)", "DataType": "Int8"},
          {"Format": "Row major linear format (kLINEAR)", "DataType": "Float"}),
    {"Name": "mm", "LayerType": "gemm", "ParameterType": "MatrixMultiply",
     "Inputs": [{"Name": "a", "Dimensions": [2, 3], "DataType": "BFloat16"},
                {"Name": "b", "Dimensions": [3, 5], "DataType": "BFloat16"}],
     "Outputs": [{"Name": "c", "Dimensions": [2, 5], "DataType": "BFloat16"}]}]}


def test_both_inspector_layouts_parse_alike() -> None:
    ten = parse_engine_information(json.dumps(TEN))
    assert ten.layout == "10.x" and ten.detailed and ten.layers == 2 and ten.shape_layers == 1
    assert ten.layer_share == {"fp16": 0.5, "fp32": 0.5}
    conv_flops = 2 * 1 * 4 * 16 * 16 * 8 * 3 * 3
    assert ten.flops == conv_flops and ten.share("fp16") == 1.0
    eleven = parse_engine_information(json.dumps(ELEVEN))
    assert eleven.layout == "11.x" and eleven.layer_share == {"int8": 0.5, "bf16": 0.5}  # INT8: quantized input
    assert eleven.flops == conv_flops + 2 * 2 * 5 * 3
    assert PrecisionAudit.from_dict(json.loads(json.dumps(eleven.to_dict()))) == eleven


def test_names_only_engines_cannot_be_checked() -> None:
    audit = parse_engine_information(json.dumps({"Layers": ["conv1", "relu"], "Bindings": ["x"]}))
    assert not audit.detailed and "DETAILED" in audit.describe()
    with pytest.raises(BuildError, match="no per-layer precision"):
        require_precision(audit, "fp16", 0.9, "m.onnx")


def test_engine_audit_goes_into_the_sidecar(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    sidecar = engine_from_onnx(tiny_onnx, tmp_path / "m.plan", progress=messages.append)
    audit = sidecar.build_options["precision_audit"]
    assert audit["detailed"] and audit["layer_share"] == {"fp32": 1.0} and audit["flops"] > 0
    assert audit["layout"] == ("10.x" if trt_double.profile == "10" else "11.x")
    assert sidecar.precision_report["tensorrt_audit"] == audit
    assert any(m.startswith("precision audit (") for m in messages)
    assert trt_double.state.builds[-1]["profiling_verbosity"] == "DETAILED"


def test_require_precision_fails_an_engine_that_is_not_what_it_says(trt_double: TrtDouble, tiny_onnx: Path,
                                                                    tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    meta = read_metadata(model)
    assert meta is not None
    write_metadata(model, replace(meta, precision="fp16"))  # an FP32 graph that calls itself FP16 (rf-detr#1453)
    labelled = tmp_path / "labelled.onnx"
    onnx.save(model, str(labelled))
    with pytest.raises(CheckFailed, match=r"runs 0\.0% of its FLOPs in FP16, below --require-precision 0\.9"):
        engine_from_onnx(labelled, tmp_path / "m.plan", TensorRTBuildOptions(require_precision=0.9))
    assert not (tmp_path / "m.plan").exists()
    with pytest.raises(ConfigConflict):
        TensorRTBuildOptions(require_precision=1.5).validate()


def test_build_engine_prints_and_enforces_the_audit(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    plan = tmp_path / "m.fp16.plan"
    result = runner.invoke(cli, ["build-engine", str(tiny_onnx), "--fp16", "--backend", "tensorrt", "-o", str(plan),
                                 "--calib-data", "synthetic", "--calib-n", "2", "--require-precision", "0.9"])
    assert result.exit_code == 0, result.output
    assert "precision audit (" in result.output and "FLOPs: FP16 100.0%" in result.output
    sidecar = read_sidecar(plan)
    assert sidecar is not None and sidecar.build_options["precision_audit"]["flop_share"] == {"fp16": 1.0}
    int8 = tmp_path / "m.int8.plan"
    result = runner.invoke(cli, ["build-engine", str(tiny_onnx), "--int8", "--backend", "tensorrt", "-o", str(int8),
                                 "--calib-data", "synthetic", "--calib-n", "2", "--require-precision", "0.9"])
    assert result.exit_code == 0, result.output
    assert "FLOPs: INT8 100.0%" in result.output


def test_deconvolution_flops_count_per_input_element() -> None:
    deconv = {"Name": "up", "LayerType": "CaskDeconvolutionV2", "ParameterType": "Convolution", "Kernel": [4, 4],
              "Groups": 2, "Inputs": [{"Name": "x", "Dimensions": [1, 8, 4, 4], "Format/Datatype": "Half"}],
              "Outputs": [{"Name": "y", "Dimensions": [1, 6, 8, 8], "Format/Datatype": "Half"}]}
    audit = parse_engine_information(json.dumps({"Bindings": [], "Layers": [deconv]}))
    assert audit.flops == 2 * (1 * 8 * 4 * 4) * 6 * 16 // 2 and audit.flop_share == {"fp16": 1.0}


def test_fused_conv_act_pool_and_depthwise_layers_count_in_10x() -> None:
    from tests.backends.inspector_layouts import DEPTHWISE_FLOPS, POINTWISE_FLOPS, STEM_FLOPS, resnet_like_10x

    audit = parse_engine_information(json.dumps(resnet_like_10x()))
    assert audit.layout == "10.x" and audit.readable
    # The ConvActPool stem: its conv FLOPs from ConvKernel/ConvStride/ConvPrePadding, at the conv's own output size
    # (32x32), not the pooled one the layer writes (16x16).
    assert audit.flops == STEM_FLOPS + DEPTHWISE_FLOPS + POINTWISE_FLOPS
    assert audit.flop_share == {"int8": 1.0}
    assert {"ConvKernel", "ConvGroups", "Kernel", "Groups", "Format/Datatype"} <= set(audit.keys_used)
    assert {"ConvKernel", "PoolingWindowSize", "Origin"} <= set(audit.layer_keys)
    assert not audit.uncounted


def test_myelin_layers_are_named_not_counted_as_zero() -> None:
    from tests.backends.inspector_layouts import myelin_10x

    audit = parse_engine_information(json.dumps(myelin_10x()))
    assert audit.uncounted == ("{ForeignNode[/Constant_7_output_0 + ONNXTRT_Broadcast.../Einsum_1]} (Myelin)",)
    assert "FLOPs not counted for 1 layer" in audit.describe() and "Myelin" in audit.describe()


@pytest.mark.parametrize("key", ["Datatype", "DataType"])
def test_11x_layout_with_myelin_sublayers(key: str) -> None:
    from tests.backends.inspector_layouts import GEMM_FLOPS, myelin_11x

    audit = parse_engine_information(json.dumps(myelin_11x(key)))
    conv = 2 * (1 * 4 * 16 * 16) * 8 * 9
    assert audit.layout == "11.x" and audit.readable
    assert audit.flops == conv + GEMM_FLOPS  # gemm: [128,128] x [128,128]; kgen cannot be counted
    assert audit.flop_share == {"fp16": conv / (conv + GEMM_FLOPS), "fp32": GEMM_FLOPS / (conv + GEMM_FLOPS)}
    assert audit.uncounted == ("__myl_MulAddRes_myl0_1 (kgen)",)
    assert key in audit.keys_used and "Format/Datatype" in audit.keys_used


def test_an_unknown_per_layer_format_is_unknown_not_zero(tmp_path: Path) -> None:
    layers = [{"Name": f"l{i}", "LayerType": "CaskConvolution", "Inputs": [{"Name": "x", "ElementKind": "Half"}],
               "Outputs": [{"Name": "y", "ElementKind": "Half"}]} for i in range(3)]
    audit = parse_engine_information(json.dumps({"I/O Tensors": [], "Layers": layers}))
    assert audit.detailed and not audit.readable and audit.unknown_layers == 3
    assert "ElementKind" in audit.tensor_keys
    text = audit.describe()
    assert "unknown inspector format" in text and "ElementKind" in text and "0.0%" not in text
    with pytest.raises(BuildError, match=r"unknown inspector format.*ElementKind"):
        require_precision(audit, "fp16", 0.9, "m.onnx")
    assert PrecisionAudit.from_dict(json.loads(json.dumps(audit.to_dict()))) == audit


def test_a_partly_unknown_format_counts_against_the_share() -> None:
    from tests.backends.inspector_layouts import resnet_like_10x

    info = resnet_like_10x()
    info["Layers"].append({"Name": "odd", "LayerType": "Mystery", "Inputs": [{"Name": "a", "Kind": "?"}],
                           "Outputs": [{"Name": "b", "Kind": "?"}]})
    audit = parse_engine_information(json.dumps(info))
    assert audit.readable and audit.unknown_layers == 1 and audit.layer_share["unknown"] == 1 / 7
    assert "1 layer of unknown format" in audit.describe()


def test_a_version_compatible_build_keeps_its_audit(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    """A version-compatible plan deserializes only with engine_host_code_allowed (sampleEngines.cpp, Polygraphy's
    loader): the audit must set it too, or --version-compatible --require-precision always fails."""
    messages: list[str] = []
    sidecar = engine_from_onnx(tiny_onnx, tmp_path / "vc.plan",
                               TensorRTBuildOptions(version_compatible=True, require_precision=0.9),
                               progress=messages.append)
    assert sidecar.build_options["precision_audit"]["layer_share"] == {"fp32": 1.0}
    assert not any("audit skipped" in m for m in messages)


@pytest.mark.parametrize("text,precision", [("Float", "fp32"), ("Half", "fp16"), ("BFloat16", "bf16"),
                                            ("Int8", "int8"), ("FP8", "fp8"), ("Float8E4M3FN", "fp8"),
                                            ("Row major linear FP32 format (kLINEAR)", "fp32"),
                                            ("Int64", "other"), ("UInt8", "other"), ("kLINEAR", "")])
def test_data_type_words_of_both_layouts(text: str, precision: str) -> None:
    from deploykit.backends.tensorrt.audit import tensor_precision

    assert tensor_precision({"Name": "t", "DataType": text}) == precision


def test_the_audit_counts_the_layers_inside_if_branches(trt_double: TrtDouble, tmp_path: Path) -> None:
    """TensorRT builds If branches' layers into the engine and the inspector lists them: an FP16 engine whose
    branches held the FLOPs and stayed FP32 fails --require-precision instead of passing on the main graph's."""
    from tests.graph.graphs import if_model

    source = tmp_path / "if.onnx"
    onnx.save(if_model(), str(source))
    plan = tmp_path / "if.fp16.plan"
    result = CliRunner().invoke(cli, ["build-engine", str(source), "--fp16", "--backend", "tensorrt", "-o", str(plan),
                                      "--require-precision", "0.6"])
    assert result.exit_code == 0, result.output
    sidecar = read_sidecar(plan)
    assert sidecar is not None
    audit = sidecar.build_options["precision_audit"]
    assert audit["flop_share"]["fp16"] > 0.6 and audit["layers"] > len(if_model().graph.node)


def test_require_precision_names_the_layers_not_in_the_precision_asked_for() -> None:
    """A mostly-FP32 engine failing an FP16 requirement names its FP32 layers, not its FP16 ones (the outliers of
    the engine's main precision, FP32 here, were the FP16 layers)."""
    half = {"Format/Datatype": "Row major linear FP16 format"}
    single = {"Format/Datatype": "Row major linear FP32"}
    big = {**_conv(single, single), "Name": "big_fp32_conv"}
    big["Inputs"] = [{"Name": "x", "Dimensions": [1, 64, 16, 16], **single}]
    audit = parse_engine_information(json.dumps({"Bindings": [], "Layers": [_conv(half, half), big]}))
    with pytest.raises(CheckFailed, match=r"in another precision: big_fp32_conv \(fp32\);") as failed:
        require_precision(audit, "fp16", 0.9, "m.onnx")
    assert "conv1" not in str(failed.value)
