"""The double's INetworkDefinition and OnnxParser.

"Parsing" checks the ONNX with onnx.checker and rejects, with the parser's error codes and the failing node's
name, a few things TensorRT's parser is documented to reject (onnx-tensorrt operators.md): opsets outside
9-24, unsupported operators (MaxUnpool, ...), MaxPool's Indices output, Resize modes other than
nearest/linear, non-zero Q/DQ zero points, UINT8 Q/DQ (operators.md, TensorRT 10.15: DequantizeLinear takes
"INT8, FP8, FP4, INT4"; "UINT8 is only supported as network input or output tensor types"), DOUBLE graph
inputs and outputs (the parser's "Unsupported ONNX data type: DOUBLE (11)"; only double *weights* are cast
down, onnx-tensorrt#674) and non-standard domains. It is written independently of deploykit's lint, so the
two check each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from tests.fakes.tensorrt_double._state import Base, Dims

UNSUPPORTED = {"MaxUnpool", "MaxRoiPool", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
               "DynamicQuantizeLinear", "Unique", "SequenceConstruct", "SequenceAt", "SplitToSequence",
               "ConcatFromSequence", "Det", "DFT", "Compress", "Multinomial", "TfIdfVectorizer", "StringNormalizer"}
ONNX_TO_TRT = {TensorProto.FLOAT: "FLOAT", TensorProto.FLOAT16: "HALF", TensorProto.INT64: "INT64",
               TensorProto.INT32: "INT32", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
               TensorProto.BOOL: "BOOL", TensorProto.BFLOAT16: "BF16", TensorProto.FLOAT8E4M3FN: "FP8",
               TensorProto.INT4: "INT4", TensorProto.FLOAT4E2M1: "FP4"}


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

    def fill(self, model: onnx.ModelProto, model_bytes: bytes) -> None:
        initializers = {i.name for i in model.graph.initializer}
        self._inputs = [self._tensor(v) for v in model.graph.input if v.name not in initializers]
        self._outputs = [self._tensor(v) for v in model.graph.output]
        self.model_bytes = model_bytes

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
        self.network.fill(proto, bytes(model))
        return True

    def _check(self, proto: onnx.ModelProto) -> list[ParserError]:
        codes = self.trt.ErrorCode
        opset = next((e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")), 0)
        if not 9 <= opset <= 24:
            return [ParserError(codes.UNSUPPORTED_GRAPH, f"Unsupported ONNX opset {opset}; supported 9 to 24")]
        constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        errors = [ParserError(codes.UNSUPPORTED_GRAPH, f"Unsupported ONNX data type: DOUBLE (11) for graph I/O "
                                                       f"tensor {v.name}", -1, v.name, "")
                  for v in (*proto.graph.input, *proto.graph.output)
                  if v.type.tensor_type.elem_type == TensorProto.DOUBLE and v.name not in constants]
        dequantized_on = {  # DequantizeLinear output -> (axis, number of scales), for the ConvTranspose check
            n.output[0]: (next((int(a.i) for a in n.attribute if a.name == "axis"), 1),
                          int(constants[n.input[1]].size) if n.input[1] in constants else 1)
            for n in proto.graph.node if n.op_type == "DequantizeLinear"}
        for index, node in enumerate(proto.graph.node):
            problem = self._node_problem(node, constants, dequantized_on)
            if problem is not None:
                code, desc = problem
                errors.append(ParserError(getattr(codes, code), desc, index, node.name, node.op_type))
        return errors

    @staticmethod
    def _node_problem(node: onnx.NodeProto, constants: dict[str, np.ndarray],
                      dequantized_on: dict[str, tuple[int, int]]) -> tuple[str, str] | None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            return "UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}"
        if node.op_type in UNSUPPORTED:
            return "UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}"
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            return "UNSUPPORTED_NODE", "TensorRT does not support the indices output in MaxPool"
        if node.op_type == "Resize" and attrs.get("mode", b"nearest") not in (b"nearest", b"linear"):
            return "UNSUPPORTED_NODE_ATTR", f"Unsupported resize mode: {attrs['mode'].decode()}"
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            data = constants.get(node.input[0])
            # ONNX: QuantizeLinear without a zero point (or output_dtype) quantizes to UINT8.
            unsigned = (zero is not None and zero.dtype == np.uint8) or (data is not None and data.dtype == np.uint8) \
                or (node.op_type == "QuantizeLinear" and zero is None and attrs.get("output_dtype", 2) == 2)
            if unsigned:
                return "UNSUPPORTED_NODE_DATATYPE", f"{node.op_type} with UINT8 data: TensorRT quantizes to INT8/FP8"
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
