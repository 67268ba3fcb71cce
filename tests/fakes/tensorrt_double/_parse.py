"""The double's INetworkDefinition and OnnxParser.

"Parsing" checks the ONNX with onnx.checker and rejects, with the parser's error codes and the failing node's
name, what TensorRT's parser or network rejects. It is written independently of deploykit's lint, so the two
check each other. Each rule cites its source where it is applied (`_check`, `_node_problem`, `_float_io`):
- opsets outside 9-24, unsupported operators, MaxPool's Indices output: onnx/onnx-tensorrt docs/operators.md
  (TensorRT 10.15 table); Resize coordinate transforms outside the five it maps: onnx-tensorrt's Resize importer,
  which also takes mode "cubic" and ignores antialias and keep_aspect_ratio_policy (see _as_imported);
- asymmetric Q/DQ, non-positive scales, DequantizeLinear of UINT8 data or of anything but INT8/FP8/INT4/FP4
  (an INT32 bias included): onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper and NVIDIA/TensorRT
  include/NvInfer.h IDequantizeLayer; a QuantizeLinear with no zero point or a UINT8 zero point of 0 is
  accepted and quantizes to INT8, as the parser does (see _int8_quantization);
- Q/DQ shapes (empty scales, zero point volumes, scale ranks, block geometry, odd 4-bit counts) as the same helper
  and IQuantizeLayer/IDequantizeLayer check them, and QuantizeLinear of anything but float: _qdq.shape_problem,
  _type_problem;
- a Cast to UINT8 from an integer or bool tensor: NVIDIA/TensorRT include/NvInferRuntimeBase.h DataType::kUINT8;
- what TensorRT's layers refuse (UINT8 inside the network, GridSample ranks, a HALF scale on a FLOAT QuantizeLinear,
  TopK K > 3840, ScatterND reduction, LayerNormalization's extra outputs, CumSum axis, Dropout training): _layers;
- ConvTranspose weights quantized on axis 1: NVIDIA/TensorRT#2380;
- non-standard domains: onnx-tensorrt ModelImporter.cpp parseGraph (no importer -> plugin fallback fails),
  except calls of the model's local functions, whose bodies are checked like If branches and Loop/Scan bodies
  (see _imported_nodes and _control_problem).
DOUBLE graph inputs and outputs are accepted and become FLOAT network tensors, as onnx-tensorrt's importInput
and output marking do (importerUtils.cpp convertDtype maps DOUBLE to kFLOAT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from tests.fakes.tensorrt_double._layers import layer_problem
from tests.fakes.tensorrt_double._qdq import DEQUANTIZABLE, granularity_problem, shape_problem
from tests.fakes.tensorrt_double._state import Base, Dims

GRID_SAMPLE_MODES = (b"nearest", b"bilinear", b"bicubic")  # onnxOpImporters.cpp 10.1-GA l.5123-5137
RESIZE_TRANSFORMS = (b"align_corners", b"tf_half_pixel_for_nn", b"pytorch_half_pixel", b"half_pixel", b"asymmetric")
# onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15): every operator marked "N" in the Supported column.
UNSUPPORTED = {"AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
               "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
               "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix",
               "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
               "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
               "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
               "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique"}
# onnx-tensorrt importerUtils.cpp convertDtype: ONNX element type -> nvinfer1::DataType ("case DOUBLE: *trt_dtype =
# kFLOAT"); FLOAT4E2M1 -> kFP4 from operators.md (TensorRT 10.15 data types).
ONNX_TO_TRT = {TensorProto.FLOAT: "FLOAT", TensorProto.FLOAT16: "HALF", TensorProto.INT64: "INT64",
               TensorProto.INT32: "INT32", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
               TensorProto.BOOL: "BOOL", TensorProto.BFLOAT16: "BF16", TensorProto.FLOAT8E4M3FN: "FP8",
               TensorProto.INT4: "INT4", TensorProto.FLOAT4E2M1: "FP4", TensorProto.DOUBLE: "FLOAT"}
# NVIDIA/TensorRT include/NvInferRuntimeBase.h, DataType::kUINT8 (release/10.16 l.167-173, main l.170-176):
# "kUINT8 conversions are only supported for {kFLOAT, kHALF}" and "are not supported for {kINT8, kINT32, kBOOL}";
# onnx-tensorrt's Cast importer (onnxOpImporters.cpp, DEFINE_BUILTIN_OP_IMPORTER(Cast)) adds an ICastLayer as is.
UINT8_CASTS_FROM = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8}


class ITensor(Base):
    def __init__(self, name: str, dims: tuple[int, ...], dtype: Any) -> None:
        self.name, self.shape, self.dtype = name, Dims(dims), dtype


class INetworkDefinition(Base):
    def __init__(self, flags: int, strongly_typed: bool) -> None:
        self.flags = flags
        self.strongly_typed = strongly_typed
        self.model_bytes: bytes | None = None
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    def fill(self, model: onnx.ModelProto) -> None:
        """The network of `model`: its DOUBLE I/O becomes FLOAT (see _float_io), and the plan runs that graph."""
        model = _float_io(model)
        initializers = {i.name for i in model.graph.initializer}
        self._inputs = [self._tensor(v) for v in model.graph.input if v.name not in initializers]
        self._outputs = [self._tensor(v) for v in model.graph.output]
        self.model_bytes = model.SerializeToString()

    def _tensor(self, value: onnx.ValueInfoProto) -> ITensor:
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                     for d in value.type.tensor_type.shape.dim)
        dtype = self.trt.DataType[ONNX_TO_TRT.get(value.type.tensor_type.elem_type, "FLOAT")]
        return ITensor(value.name, dims, dtype)


class ParserError(Base):
    def __init__(self, code: Any, desc: str, node: int = -1, node_name: str = "", op: str = "") -> None:
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, node_name, op

    def code(self) -> Any:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def file(self) -> str:
        return "ModelImporter.cpp"

    def line(self) -> int:
        return 0

    def func(self) -> str:
        return "parseGraph"


class OnnxParserBase(Base):
    def __init__(self, network: INetworkDefinition, logger: Any) -> None:
        self.network, self.logger = network, self.adopt_logger(logger)
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors = []

    def supports_operator(self, op_name: str) -> bool:
        return op_name not in UNSUPPORTED

    def supports_model_v2(self, model: bytes, path: str | None = None) -> bool:
        return not self._check(onnx.load_from_string(bytes(model)))

    def parse_from_file(self, model: str) -> bool:
        if not Path(model).is_file():
            self._errors = [ParserError(self.trt.ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to open {model}")]
            return False
        return self.parse(Path(model).read_bytes(), str(model))

    def parse(self, model: bytes, path: str | None = None) -> bool:
        codes = self.trt.ErrorCode
        try:
            proto = onnx.load_from_string(bytes(model))
            onnx.checker.check_model(proto)
        except Exception as exc:
            self._errors = [ParserError(codes.MODEL_DESERIALIZE_FAILED, f"Failed to parse ONNX model: {exc}")]
            return False
        self._errors = self._check(proto)
        for error in self._errors:
            self.logger.log(self.trt.ILogger.Severity.ERROR, f"ModelImporter: {error.node_name()}: {error.desc()}")
        if self._errors:
            return False
        self.network.fill(_as_imported(self._int8_quantization(self._clamp_double_weights(proto))))
        return True

    def _int8_quantization(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """Q/DQ as TensorRT quantizes them: INT8 where ONNX says UINT8. onnx-tensorrt onnxOpImporters.cpp
        QuantDequantLinearHelper (10.12+): "ONNX default is UINT8, TRT will default to INT8 as TRT allows UINT8
        quantization only on DLA", and for a UINT8 zero point LOG_WARNING("TensorRT supports QuantizeLinear/
        DequantizeLinear with UINT8 zero_point only on DLA ... Defaulting to INT8 instead."). The double gives
        those nodes an INT8 zero point of 0, so ONNX Runtime computes what the engine would."""
        graph = proto.graph
        inits = {i.name: i for i in graph.initializer}
        changed: set[str] = set()
        for node in graph.node:
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if zero is not None and zero.data_type == TensorProto.UINT8:
                self.logger.log(self.trt.ILogger.Severity.WARNING,
                                f"{node.name}: TensorRT supports QuantizeLinear/DequantizeLinear with UINT8 "
                                "zero_point only on DLA. Defaulting to INT8 instead.")
            elif zero is not None and zero.data_type not in DEQUANTIZABLE:  # same helper: "else" branch
                self.logger.log(self.trt.ILogger.Severity.WARNING,
                                f"{node.name}: For zero_point with type {TensorProto.DataType.Name(zero.data_type)} "
                                "TensorRT will use INT8 instead.")
            elif not (zero is None and node.op_type == "QuantizeLinear"
                      and not any(a.name == "output_dtype" for a in node.attribute)):
                continue
            scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else np.zeros(())
            name = f"{node.output[0]}__int8_zero_point"
            graph.initializer.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), name))
            node.input[:] = [*node.input[:2], name]
            if node.op_type == "QuantizeLinear":
                changed.add(node.output[0])
        for value in (*graph.value_info, *graph.output):  # Q outputs are INT8 now, as in TensorRT's network
            if value.name in changed and value.type.tensor_type.elem_type not in DEQUANTIZABLE:
                value.type.tensor_type.elem_type = TensorProto.INT8
        return proto

    def _clamp_double_weights(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """DOUBLE weights are cast down to FLOAT, out-of-range values clamped with a warning per value
        (onnx-tensorrt WeightsContext.cpp convertDouble: LOG_WARNING("Weight at index " << i << ": " << value
        << " is out of range. Clamping to: " << clamped)); the double keeps them DOUBLE, clamped, for ONNX
        Runtime."""
        limit = float(np.finfo(np.float32).max)
        for init in proto.graph.initializer:
            if init.data_type != TensorProto.DOUBLE:
                continue
            values = numpy_helper.to_array(init)
            flat = values.reshape(-1).copy()
            for i in np.flatnonzero(np.abs(flat) > limit):
                clamped = float(np.clip(flat[i], -limit, limit))
                self.logger.log(self.trt.ILogger.Severity.WARNING,
                                f"Weight at index {i}: {flat[i]:g} is out of range. Clamping to: {clamped:g}")
                flat[i] = clamped
            init.CopyFrom(numpy_helper.from_array(flat.reshape(values.shape), init.name))
        return proto

    def _check(self, proto: onnx.ModelProto) -> list[ParserError]:
        codes = self.trt.ErrorCode
        # operators.md (onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15): "opset 9 to opset 24".
        opset = next((e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")), 0)
        if not 9 <= opset <= 24:
            return [ParserError(codes.UNSUPPORTED_GRAPH, f"Unsupported ONNX opset {opset}; supported 9 to 24")]
        # The parser imports If branches and Loop/Scan bodies (onnxOpImporters.cpp 10.1-GA l.2606, 2629-2630,
        # 2906, 5046: parseGraph / importSubgraph) and local functions' bodies (LocalFunctionImporter, l.6458)
        # node by node, as it does the main graph: every rule applies to their nodes too.
        nodes = _imported_nodes(proto)
        constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        for graph in [proto.graph, *_subgraphs(nodes, {})]:
            constants.update(_constants(graph))
        constants.update({n.output[0]: numpy_helper.to_array(a.t) for n in nodes
                          if n.op_type == "Constant" for a in n.attribute
                          if a.name == "value" and a.type == onnx.AttributeProto.TENSOR})
        types, ranks, shapes = _element_types(proto)
        # QuantizeLinear outputs are INT8 tensors in TensorRT's network whatever ONNX declares (_int8_quantization)
        quantized = {n.output[0] for n in nodes if n.op_type == "QuantizeLinear"}
        types.update({name: TensorProto.INT8 for name in quantized if types.get(name) not in DEQUANTIZABLE})
        functions = {f.name: f for f in proto.functions}
        errors = []
        dequantized_on = {  # DequantizeLinear output -> (axis, number of scales), for the ConvTranspose check
            n.output[0]: (next((int(a.i) for a in n.attribute if a.name == "axis"), 1),
                          int(constants[n.input[1]].size) if n.input[1] in constants else 1)
            for n in nodes if n.op_type == "DequantizeLinear"}
        # Tensors "rooted at an IConstantLayer": constants and Quantize outputs of constants (NvInfer.h, below)
        weights = {*constants,
                   *(n.output[0] for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] in constants)}
        dynamic_channels = {v.name for v in proto.graph.input if len(v.type.tensor_type.shape.dim) > 1
                            and not v.type.tensor_type.shape.dim[1].dim_value}
        for index, node in enumerate(nodes):
            # Types first: QuantDequantLinearHelper checks DequantizeLinear's input type before anything else.
            problem = (_type_problem(node, types) or layer_problem(node, constants, types, ranks, opset)
                       or _control_problem(node, constants, functions)
                       or self._node_problem(node, constants, dequantized_on, opset, functions, dynamic_channels)
                       or granularity_problem(node, constants, types, weights)
                       or shape_problem(node, constants, types, shapes))
            if problem is not None:
                code, desc = problem
                errors.append(ParserError(getattr(codes, code), desc, index, node.name, node.op_type))
        return errors

    @staticmethod
    def _node_problem(node: onnx.NodeProto, constants: dict[str, np.ndarray],
                      dequantized_on: dict[str, tuple[int, int]], opset: int,
                      functions: dict[str, onnx.FunctionProto], dynamic_channels: set[str]) -> tuple[str, str] | None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        # onnx-tensorrt ModelImporter.cpp parseGraph: an op with no importer goes to FallbackPluginImporter, which
        # fails without a registered plugin ("No importer registered for op"); a model-local function's name is
        # looked up before that (10.1-GA l.159: "else if (ctx->localFunctions().count(nodeType))").
        if node.domain not in ("", "ai.onnx") and node.op_type not in functions:
            return "UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}"
        # operators.md (10.15): "N" in the Supported column.
        if node.op_type in UNSUPPORTED:
            return "UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}"
        # NvInfer.h addConvolutionNd (v10.16 l.8913, v11.1 l.9050): "It is an error to specify a wildcard value for the
        # 'C' dimension of the input tensor" (a network input whose channel axis the ONNX leaves dynamic).
        if node.op_type == "Conv" and node.input[0] in dynamic_channels:
            return "UNSUPPORTED_NODE", "Convolution: the channel dimension of the input must not be dynamic"
        # operators.md (10.15), MaxPool: "`Indices` output tensor unsupported".
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            return "UNSUPPORTED_NODE", "TensorRT does not support the indices output in MaxPool"
        # onnx-tensorrt onnxOpImporters.cpp DEFINE_BUILTIN_OP_IMPORTER(Resize): mode "cubic" -> kCUBIC, "linear" ->
        # kLINEAR, anything else kNEAREST (operators.md omits cubic; the importer takes it); from opset 11 a
        # coordinate_transformation_mode other than these five fails: ONNXTRT_CHECK_NODE(false, "Unsupported
        # coordinate transformation mode " << transformationMode, ..., kUNSUPPORTED_NODE).
        transform = attrs.get("coordinate_transformation_mode", b"half_pixel")
        if node.op_type == "Resize" and opset >= 11 and transform not in RESIZE_TRANSFORMS:
            return "UNSUPPORTED_NODE", f"Unsupported coordinate transformation mode {transform.decode()}"
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            data = constants.get(node.input[0])
            # onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper (10.12+): "if (isDQ &&
            # !enableUInt8AsymmetricQuantization) checkNotInvalidType(inputs.at(0), {"UINT8"})". A QuantizeLinear's
            # UINT8 zero point is no longer refused: it warns and quantizes to INT8 (_int8_quantization).
            if node.op_type == "DequantizeLinear" and data is not None and data.dtype == np.uint8:
                return "UNSUPPORTED_NODE_DATATYPE", f"{node.op_type} with UINT8 data: TensorRT quantizes to INT8/FP8"
            # QuantDequantLinearHelper: ONNXTRT_CHECK_NODE(scaleAllPositive, "Scale coefficients must all be
            # positive", ..., kINVALID_NODE) for a constant FLOAT/FLOAT16/BFLOAT16 scale (10.1-GA l.1403-1404).
            scale = constants.get(node.input[1]) if len(node.input) > 1 else None
            if scale is not None and scale.dtype.kind == "f" and not np.all(scale > 0):
                return "INVALID_NODE", "Scale coefficients must all be positive"
            # NvInfer.h IQuantizeLayer (release/10.16 l.5558): "Per-channel quantization is supported only for weight
            # inputs. Thus, Activations cannot be quantized per-channel."
            if node.op_type == "QuantizeLinear" and scale is not None and scale.size > 1 and data is None:
                return "INVALID_NODE", "Per-channel quantization is supported only for weight inputs, not activations"
            # QuantDequantLinearHelper (10.1-GA l.1533-1540, 10.12+ alike): a 1-D scale has one coefficient per channel
            # of the axis: "The number of scales is not equal to the number of output channels", kINVALID_NODE.
            axis = int(attrs.get("axis", 1 if opset >= 13 else 0))
            if data is not None and scale is not None and scale.ndim == 1 and scale.size > 1 \
                    and -data.ndim <= axis < data.ndim and data.shape[axis] != scale.size:
                return "INVALID_NODE", "The number of scales is not equal to the number of output channels."
            # NvInfer.h IDequantizeLayer / IQuantizeLayer: "zeroPt must only contain zero-valued coefficients,
            # because only symmetric quantization is supported"; operators.md: "`x_zero_point` must be zero".
            if zero is not None and np.any(zero != 0):
                return "INVALID_NODE", "TensorRT only supports symmetric quantization: zero point must be 0"
        # ConvTranspose weights quantized per output channel (axis 1 of the ONNX weight): TensorRT's deconvolution
        # kernels assume per-input-channel scales (axis 0) and do not support axis 1 (NVIDIA/TensorRT#2380).
        if node.op_type == "ConvTranspose" and node.input[1] in dequantized_on:
            axis, channels = dequantized_on[node.input[1]]
            if axis != 0 and channels > 1:
                return "UNSUPPORTED_NODE", ("ConvTranspose: per-channel weight quantization is supported on axis 0 "
                                            f"(input channels) only, got axis {axis}")
        return None


def _subgraphs(nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray]) -> list[onnx.GraphProto]:
    """The bodies the parser imports: of an If with a constant condition only the selected branch
    (onnxOpImporters.cpp 10.1-GA l.2595-2599, "For constant conditions, parse only the selected subgraph")."""
    found = []
    for node in nodes:
        branch = None
        if node.op_type == "If" and node.input[0] in constants:
            branch = "then_branch" if bool(np.asarray(constants[node.input[0]]).reshape(-1)[0]) else "else_branch"
        found += [g for a in node.attribute if branch is None or a.name == branch
                  for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)]
    return found


def _imported_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The main graph's nodes, then those of local functions' bodies, then of every subgraph (recursively)."""
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    constants = _constants(proto.graph)
    pending = _subgraphs(nodes, constants)
    while pending:
        graph = pending.pop()
        nodes.extend(graph.node)
        constants.update(_constants(graph))
        pending.extend(_subgraphs(list(graph.node), constants))
    return nodes


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR})
    return values


def _control_problem(node: onnx.NodeProto, constants: dict[str, np.ndarray],
                     functions: dict[str, onnx.FunctionProto]) -> tuple[str, str] | None:
    """If and local-function calls as the parser imports them."""
    function = functions.get(node.op_type)
    # onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.6461-6464, LocalFunctionImporter: ASSERT_NODE(node.input().size()
    # == function.input().size(), "LocalFunction has an unexpected number of inputs! ...", kINVALID_NODE).
    if function is not None and node.domain == function.domain and len(node.input) != len(function.input):
        return "INVALID_NODE", "LocalFunction has an unexpected number of inputs!"
    # docs/operators.md (10.1-GA l.94), If: "Output tensors of the two conditional branches must have the same rank
    # and must have different names"; a build-time constant condition parses only the chosen branch
    # (onnxOpImporters.cpp l.2595-2596).
    if node.op_type == "If" and node.input[0] not in constants:
        outputs = [{o.name for o in a.g.output} for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
        if len(outputs) == 2 and outputs[0] & outputs[1]:
            return "INVALID_NODE", "If: the two conditional branches' output tensors must have different names"
    return None


def _as_imported(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Resize as onnx-tensorrt's importer builds it (DEFINE_BUILTIN_OP_IMPORTER(Resize)): a mode other than
    "cubic" or "linear" is kNEAREST, and antialias and keep_aspect_ratio_policy are never read, so the engine
    resizes without them; ONNX Runtime then computes what the engine would. Likewise pooling without its dilations
    (importerUtils.cpp 10.1-GA l.770 and l.1418: getKernelParams(..., nullptr /*dilations*/)) and GridSample with
    a mode other than nearest/bilinear/bicubic as nearest (onnxOpImporters.cpp 10.1-GA l.5123-5137)."""
    for node in proto.graph.node:
        if node.op_type in ("MaxPool", "AveragePool", "LpPool"):
            kept = [a for a in node.attribute if a.name != "dilations"]
            del node.attribute[:]
            node.attribute.extend(kept)
        for attr in node.attribute:
            if node.op_type == "GridSample" and attr.name == "mode" and attr.s not in GRID_SAMPLE_MODES:
                attr.s = b"nearest"
        if node.op_type != "Resize":
            continue
        kept = [a for a in node.attribute if a.name not in ("antialias", "keep_aspect_ratio_policy")]
        for attr in kept:
            if attr.name == "mode" and attr.s not in (b"linear", b"cubic"):
                attr.s = b"nearest"
        del node.attribute[:]
        node.attribute.extend(kept)
    return proto


def _element_types(proto: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int], dict[str, tuple[int, ...]]]:
    """Tensor name -> ONNX element type, -> rank and -> dims (-1 where dynamic) where known, from ONNX shape
    inference and the declarations (the parser knows them: TensorOrWeights::getType, ITensor::getDimensions)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False)
    except Exception:  # an unusual graph: fall back to what is declared
        inferred = proto
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)
             if v.type.HasField("tensor_type")}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.input, *graph.value_info, *graph.output)
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    ranks.update({i.name: len(i.dims) for i in proto.graph.initializer})
    shapes = {v.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
              for v in (*graph.input, *graph.value_info, *graph.output)
              if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    shapes.update({i.name: tuple(i.dims) for i in proto.graph.initializer})
    return types, ranks, shapes


def _type_problem(node: onnx.NodeProto, types: dict[str, int]) -> tuple[str, str] | None:
    """Rules on the types TensorRT's layers accept (sources at _qdq.DEQUANTIZABLE and UINT8_CASTS_FROM)."""
    source = types.get(node.input[0], TensorProto.UNDEFINED) if node.input else TensorProto.UNDEFINED
    name = TensorProto.DataType.Name(source) if source else "UNDEFINED"
    if node.op_type == "DequantizeLinear" and source not in (*DEQUANTIZABLE, TensorProto.UNDEFINED):
        return "UNSUPPORTED_NODE_DATATYPE", (f"DequantizeLinear of {name} data: IDequantizeLayer takes INT8, FP8, "
                                             "INT4 or FP4 (keep biases in float)")
    # NvInfer.h IQuantizeLayer (v10.16 l.5539-5540, v11.1 l.5362-5363): "The input type, if constrained, must be
    # constrained to DataType::kFLOAT, DataType::kHALF, or DataType::kBF16" (ONNX also takes INT32; DOUBLE -> FLOAT).
    if node.op_type == "QuantizeLinear" and source not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                                                           TensorProto.DOUBLE, TensorProto.UNDEFINED):
        return "INVALID_NODE", f"QuantizeLinear of {name} data: IQuantizeLayer takes FLOAT, HALF or BF16 input"
    to = next((a.i for a in node.attribute if a.name == "to"), 0)
    if node.op_type == "Cast" and to not in ONNX_TO_TRT:  # onnxOpImporters.cpp 10.1-GA l.394: convertDtype fails
        return "INVALID_NODE", "Unsupported cast!"
    if node.op_type == "Cast" and source == TensorProto.UINT8 and to not in UINT8_CASTS_FROM:  # both ways
        return "INVALID_NODE", (f"Cast from UINT8 to {TensorProto.DataType.Name(to)}: kUINT8 conversions are only "
                                "supported for {kFLOAT, kHALF}")
    if node.op_type == "Cast" and source and source not in UINT8_CASTS_FROM and to == TensorProto.UINT8:
        return "INVALID_NODE", (f"Cast from {name} to UINT8: kUINT8 conversions are only supported for "
                                "{kFLOAT, kHALF}")
    return None


def _float_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """DOUBLE graph inputs and outputs as TensorRT's network has them: FLOAT, with the graph's own DOUBLE
    computation behind Casts (onnx-tensorrt ModelImporter.cpp importInput: addInput with convertDtype's kFLOAT;
    outputs are marked with convertDtype's type too; operators.md: "TensorRT will attempt to cast DOUBLE down to
    FLOAT"). The double then runs the graph with float32 I/O, as the engine would."""
    graph = model.graph
    doubles_in = [v for v in graph.input if v.type.tensor_type.elem_type == TensorProto.DOUBLE]
    doubles_out = [v for v in graph.output if v.type.tensor_type.elem_type == TensorProto.DOUBLE]
    if not doubles_in and not doubles_out:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    casts = []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.DOUBLE:
            inner = f"{value.name}__as_double"
            for node in graph.node:
                node.input[:] = [inner if i == value.name else i for i in node.input]
            casts.append(onnx.helper.make_node("Cast", [value.name], [inner], to=TensorProto.DOUBLE))
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    tail = []
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.DOUBLE:
            inner = f"{value.name}__double"
            for node in graph.node:
                node.output[:] = [inner if o == value.name else o for o in node.output]
                node.input[:] = [inner if i == value.name else i for i in node.input]
            tail.append(onnx.helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = [*casts, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    return model
