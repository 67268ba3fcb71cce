"""The double's IEngineInspector: engine information JSON in the 10.x or the 11.x layout, per API profile.

Sources, rule by rule:
- 10.x: "Bindings" (a list of I/O names) and one "Format/Datatype" string per layer tensor ("Row major linear
  FP32", "Row major Int8 format"), as the engine dumps of NVIDIA/TensorRT tools/experimental/trt-engine-explorer
  (release/10.16, examples/pytorch/resnet/A100/*/ *.engine.graph.json) show them;
- 11.x: "I/O Tensors" (Name, IOMode, DataType "Float", Dimensions, Location, IsShapeInferenceIO, ProfileInfo) in
  place of "Bindings", and the tensor string split into "Format" and a data type field ("Migrating IEngineInspector
  Usage from TensorRT 10.x to 11.x", docs.nvidia.com, TensorRT 11.0-11.4);
- with ProfilingVerbosity other than DETAILED (the default is LAYER_NAMES_ONLY) layers are names only ("Engine
  Inspector": "only the layer names will be printed"; NvInfer.h IBuilderConfig::setProfilingVerbosity).
"Layers" are the ONNX nodes (those inside If branches and Loop/Scan bodies too) less Q/DQ and Constant, which
TensorRT fuses ("Explicit Quantization": a DequantizeLinear feeding a convolution or matrix multiply fuses into an
INT8 kernel, so that layer reads INT8);
every other layer's type is its ONNX output type. Dimensions come from ONNX shape inference at the shapes set on
`execution_context`, else -1 for dynamic dimensions, as in TensorRT (IEngineInspector::setExecutionContext:
"Otherwise, values dependent on input shapes will be displayed as -1"). The double does not fuse layers the way
TensorRT's tactics do (ConvActPool, Myelin): the audit's tests use dumps in those layouts directly
(tests/backends/inspector_layouts.py).
"""

from __future__ import annotations

import json
from typing import Any

import onnx
from onnx import TensorProto, numpy_helper, shape_inference

from tests.fakes.tensorrt_double._state import Base

FORMATS_10 = {TensorProto.FLOAT: "Row major linear FP32", TensorProto.FLOAT16: "Row major linear FP16 format",
              TensorProto.BFLOAT16: "Row major linear BFloat16 format", TensorProto.INT8: "Row major Int8 format",
              TensorProto.INT32: "Row major linear Int32", TensorProto.INT64: "Row major linear Int64 format",
              TensorProto.BOOL: "Row major linear BOOL", TensorProto.UINT8: "Row major linear UInt8 format"}
TYPES_11 = {TensorProto.FLOAT: "Float", TensorProto.FLOAT16: "Half", TensorProto.BFLOAT16: "BFloat16",
            TensorProto.INT8: "Int8", TensorProto.INT32: "Int32", TensorProto.INT64: "Int64",
            TensorProto.BOOL: "Bool", TensorProto.UINT8: "UInt8"}
FUSED = {"QuantizeLinear", "DequantizeLinear", "Constant"}
PARAMETER_TYPES = {"Conv": "Convolution", "ConvTranspose": "Deconvolution", "MatMul": "MatrixMultiply",
                   "Gemm": "MatrixMultiply"}


class EngineInspector(Base):
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.trt, self.state = engine.trt, engine.state
        self.execution_context: Any = None
        self.error_recorder: Any = None

    def get_engine_information(self, format: Any) -> str:
        layers = self._layers()
        if format != self.trt.LayerInformationFormat.JSON:
            return "\n".join(str(layer if isinstance(layer, str) else layer["Name"]) for layer in layers)
        info: dict[str, Any] = {"Layers": layers}
        if self.state.profile == "10":
            info["Bindings"] = [e[0] for e in self.engine.io]
        else:
            info["I/O Tensors"] = [self._io_tensor(e) for e in self.engine.io]
        return json.dumps(info)

    def get_layer_information(self, layer_index: int, format: Any) -> str:
        return json.dumps(self._layers()[layer_index])

    def _io_tensor(self, entry: tuple[str, Any, tuple[int, ...], Any]) -> dict[str, Any]:
        name, mode, dims, dtype = entry
        words = {"FLOAT": "Float", "HALF": "Half", "BF16": "BFloat16", "INT8": "Int8", "INT32": "Int32",
                 "INT64": "Int64", "BOOL": "Bool", "UINT8": "UInt8"}
        return {"Name": name, "IOMode": "Input" if mode == self.trt.TensorIOMode.INPUT else "Output",
                "DataType": words.get(dtype.name, dtype.name), "Dimensions": list(dims), "Location": "Device",
                "IsShapeInferenceIO": False, "ProfileInfo": []}

    def _model(self) -> onnx.ModelProto:
        model = onnx.load_from_string(self.engine.model_bytes)
        shapes = getattr(self.execution_context, "shapes", {}) or {}
        for value in model.graph.input:
            if value.name in shapes:
                for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=True):
                    dim.Clear()
                    dim.dim_value = int(size)
        return shape_inference.infer_shapes(model)

    def _layers(self) -> list[Any]:
        model = self._model()
        graphs = _graphs(model.graph)
        every = [n for g in graphs for n in g.node]
        nodes = [n for n in every if n.op_type not in FUSED]
        if self.engine.header.get("profiling_verbosity") != "DETAILED":
            return [n.name or n.op_type for n in nodes]
        values = {v.name: v.type.tensor_type for g in graphs for v in (*g.value_info, *g.input, *g.output)
                  if v.type.HasField("tensor_type")}
        initializers = [i for g in graphs for i in g.initializer]
        for init in initializers:
            values.setdefault(init.name, onnx.helper.make_tensor_type_proto(init.data_type, init.dims).tensor_type)
        producers = {o: n.op_type for n in every for o in n.output}
        weights = {i.name: numpy_helper.to_array(i) for i in initializers}
        return [self._layer(n, values, producers, weights) for n in nodes]

    def _tensor(self, name: str, values: dict[str, Any], quantized: bool) -> dict[str, Any]:
        kind = values.get(name)
        elem = TensorProto.INT8 if quantized else (kind.elem_type if kind is not None else TensorProto.FLOAT)
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim] if kind is not None else []
        tensor: dict[str, Any] = {"Name": name, "Location": "Device", "Dimensions": dims}
        if self.state.profile == "10":
            tensor["Format/Datatype"] = FORMATS_10.get(elem, "Unknown format")
        else:
            tensor["Format"] = "Row major linear format (kLINEAR)"
            tensor["DataType"] = TYPES_11.get(elem, "Unknown")
        return tensor

    def _layer(self, node: onnx.NodeProto, values: dict[str, Any], producers: dict[str, str],
               weights: dict[str, Any]) -> dict[str, Any]:
        fused_dq = node.op_type in PARAMETER_TYPES
        inputs = [self._tensor(i, values, fused_dq and producers.get(i) == "DequantizeLinear")
                  for i in node.input[:1] if i]
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
            inputs.append(self._tensor(node.input[1], values, producers.get(node.input[1]) == "DequantizeLinear"))
        layer: dict[str, Any] = {"Name": node.name or node.op_type, "LayerType": f"double{node.op_type}",
                                 "Inputs": inputs, "Outputs": [self._tensor(o, values, False) for o in node.output],
                                 "ParameterType": PARAMETER_TYPES.get(node.op_type, node.op_type)}
        if node.op_type in ("Conv", "ConvTranspose"):
            source = node.input[1]
            weight = weights.get(source)
            if weight is None:  # INT8 weights arrive through their DequantizeLinear
                dq = next((n for n in onnx.load_from_string(self.engine.model_bytes).graph.node
                           if source in n.output), None)
                weight = weights.get(dq.input[0]) if dq is not None else None
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if weight is not None:
                layer["Kernel"] = list(weight.shape[2:])
            layer["Groups"] = int(attrs.get("group", 1))
        return layer


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """`graph` and its If branches and Loop/Scan bodies (recursively): TensorRT builds their layers into the engine
    (IIfConditional and ILoop hold ordinary layers; onnx-tensorrt imports each body node by node, parseGraph), and
    the inspector lists them with the rest."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                found += _graphs(sub)
    return found
