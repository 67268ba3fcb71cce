"""Where does a candidate ONNX model diverge from the FP32 reference ONNX? Node-by-node localisation.

Both graphs are run in ONNX Runtime with their intermediate tensors exposed as outputs (graph optimisation off,
so every node runs as written and nothing is fused away), on one input, a chunk of tensors at a time so memory
stays bounded. Tensors are paired between the graphs:
1. by node name and op type (export, FP16 conversion and Q/DQ insertion keep node names), else
2. by output tensor name, else
3. by structure: a candidate node of the same op type whose first input is the paired tensor, looking through
   inserted Cast / QuantizeLinear / DequantizeLinear nodes, else
4. a reference node without a counterpart still has its outputs compared with candidate tensors of the same names
   (the candidate computes them with other ops, e.g. INT8's Clip as Relu + Min).
For each reference node, error = relative L2 error ||c - r|| / ||r|| of its worst output (tensors with an RMS
below 1e-6 are measured in absolute terms); input error = the largest error among its activation inputs
(weights are not activations, so a corrupted weight shows up as growth; an input never compared counts the error
of the nearest compared tensors it comes from); growth = (error + f) / (input error + f)
with f = tolerance / 100, so a node that turns exact inputs into a wrong output scores highest. Reported: the
first node in topological order whose error crosses the tolerance, and the top-k nodes by growth among those
with an error above f, each with its
op type, ONNX node name and the PyTorch module it came from (read from the exporter's records, `module_path`).

The default tolerance on the relative error is the candidate precision's entry's `localize_tolerance`
(deploykit.precision.table): fp32 1e-4 (fp32 runtimes differ at ~1e-6), fp16 1e-2 (an 11-bit mantissa gives
~5e-4 per op, growing with depth), int8 1e-1 (per-tensor activation quantisation costs a few percent per layer).
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.errors import ParityError
from deploykit.io.model_files import read_onnx
from deploykit.runner import as_input
from deploykit.types import Progress

PASSTHROUGH = {"Cast", "QuantizeLinear", "DequantizeLinear"}
SKIPPED_OPS = {"Constant", "Shape", "Size"}
TOP_K = 5  # nodes listed by default
CHUNK = 64  # tensors exposed per session: bounds the memory held by intermediate outputs
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class NodeError:
    node: str  # the reference graph's node name
    op_type: str
    module: str  # PyTorch module path ("" when the exporter recorded none)
    tensor: str  # the reference tensor that was compared
    error: float
    input_error: float
    growth: float
    cosine: float
    # reference nodes between this one and its compared inputs that have no tensor of their own in the candidate
    # (fused into this node there, or computed otherwise): the error may enter in any of them
    through: tuple[str, ...] = ()


@dataclass
class Localization:
    candidate: str
    reference_onnx: str
    tolerance: float
    compared: int
    unmatched: int  # float tensors of the reference without a counterpart in the candidate
    first: NodeError | None
    top: list[NodeError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Localization:
        first = data.get("first")
        return cls(candidate=str(data["candidate"]), reference_onnx=str(data["reference_onnx"]),
                   tolerance=float(data["tolerance"]), compared=int(data["compared"]),
                   unmatched=int(data["unmatched"]), first=_node_error(first) if first else None,
                   top=[_node_error(n) for n in data.get("top", [])])


def _node_error(data: Mapping[str, Any]) -> NodeError:
    return NodeError(**{**data, "through": tuple(data.get("through", ()))})


def module_path(node: onnx.NodeProto) -> str:
    """The PyTorch module a node came from: dynamo's metadata_props, else the TorchScript exporter's scoped name."""
    props = {p.key: p.value for p in node.metadata_props}
    scopes = props.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            parsed = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, list) and len(parsed) >= 2:
            return str(parsed[-2])  # the last entry is the FX node, the one before it its module
    namespace = props.get("namespace")
    if namespace and "/" in namespace:
        return namespace.split("/")[-2].partition(":")[0].strip()
    if node.name.startswith("/"):
        return scoped_name_to_module(node.name)
    return ""


def scoped_name_to_module(name: str) -> str:
    """'/backbone/layer1/layer1.0/conv1/Conv' -> 'backbone.layer1.0.conv1'.

    The TorchScript exporter names each scope by the module's qualified name from its last non-numeric atom on
    ('layer1.0', 'downsample.0'), so such a part replaces the path's tail that starts with that same atom, and a
    ModuleList child ('blocks.0', the list itself is never called) is appended whole.
    """
    path: list[str] = []
    for part in [p for p in name.split("/") if p][:-1]:  # the last part is the op
        atoms = part.split(".")
        named = [i for i, atom in enumerate(path) if not atom.isdigit()]
        continues = len(atoms) > 1 and bool(named) and path[named[-1]] == atoms[0]
        path = (path[: named[-1]] if continues else path) + atoms
    return ".".join(path)


class _Graph:
    """A loaded ONNX model with the indexes pairing needs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.model = read_onnx(path)
        graph = self.model.graph
        self.initializers = {init.name for init in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.input_types = {i.name: i.type.tensor_type.elem_type for i in graph.input}
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.by_name = {node.name: node for node in graph.node if node.name}
        self.float_tensors = _float_tensors(self.model)

    def fed(self, name: str, x: np.ndarray) -> np.ndarray:
        """`x` as graph input `name` is fed it (float16 for a --fp16-io graph): its rounding is the first error."""
        kind = self.input_types.get(name, onnx.TensorProto.UNDEFINED)
        return as_input(x, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(kind))) if kind else x

    def origin(self, tensor: str) -> str:
        """Look through inserted Cast / Q / DQ nodes to the tensor they convert."""
        seen = 0
        while tensor in self.producer and self.producer[tensor].op_type in PASSTHROUGH and seen < 8:
            tensor, seen = self.producer[tensor].input[0], seen + 1
        return tensor


def _float_tensors(model: onnx.ModelProto) -> set[str] | None:
    """Names of float tensors from shape inference; None when inference fails (then decide at run time)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference failing only means we filter by dtype after running
        return None
    values = [*inferred.graph.value_info, *inferred.graph.output]
    return {v.name for v in values if v.type.tensor_type.elem_type in _FLOAT_TYPES}


@dataclass
class Pairing:
    tensors: dict[str, str]  # reference tensor -> candidate tensor (node outputs and graph inputs)
    nodes: list[tuple[onnx.NodeProto, onnx.NodeProto]]  # (reference node, candidate node)


def pair_tensors(reference: _Graph, candidate: _Graph) -> Pairing:
    """Pair the graphs' nodes and their output tensors (see the module docstring)."""
    pairs = dict(zip(reference.inputs, candidate.inputs, strict=False))
    structural: dict[tuple[str, str], list[onnx.NodeProto]] = {}
    for node in candidate.model.graph.node:
        if node.input and node.op_type not in PASSTHROUGH:
            structural.setdefault((node.op_type, candidate.origin(node.input[0])), []).append(node)
    used: set[int] = set()
    nodes = []
    for node in reference.model.graph.node:
        if node.op_type in SKIPPED_OPS:
            continue
        match = reference_match(node, reference, candidate, pairs, structural, used)
        if match is not None and not _outputs_agree(node, match, reference):
            match = None
        if match is None:
            # No counterpart node (the candidate computes it with other ops, e.g. Clip as Relu + Min), but a
            # tensor of the same name is the same value: compare it, or the error entering here goes unseen.
            pairs.update({out: out for out in node.output if out and out in candidate.producer})
            continue
        used.add(id(match))
        nodes.append((node, match))
        for ref_out, cand_out in zip(node.output, match.output, strict=False):
            if ref_out and cand_out:
                pairs[ref_out] = cand_out
    return Pairing(pairs, nodes)


def _outputs_agree(node: onnx.NodeProto, match: onnx.NodeProto, reference: _Graph) -> bool:
    """A candidate node is not the reference node's counterpart when it writes a tensor the reference makes at
    another node: it computes more (a Conv with the BatchNorm or activation after it fused in, keeping the Conv's
    name), and pairing it would compare the Conv's output with the fused result."""
    return all(cand == ref or cand not in reference.producer for ref, cand in zip(node.output, match.output,
                                                                                     strict=False))


def reference_match(node: onnx.NodeProto, reference: _Graph, candidate: _Graph, pairs: dict[str, str],
                    structural: dict[tuple[str, str], list[onnx.NodeProto]], used: set[int]) -> onnx.NodeProto | None:
    by_name = candidate.by_name.get(node.name) if node.name else None
    if by_name is not None and by_name.op_type == node.op_type:
        return by_name
    for out in node.output:
        producer = candidate.producer.get(out)
        if producer is not None and producer.op_type == node.op_type:
            return producer
    if not node.input:
        return None
    first = pairs.get(reference.origin(node.input[0]))
    if first is None:
        return None
    for option in structural.get((node.op_type, candidate.origin(first)), []):
        if id(option) not in used:
            return option
    return None


Comparison = tuple[str, str]  # (reference tensor, candidate tensor)


def _node_inputs(pairing: Pairing, reference: _Graph, candidate: _Graph,
                 wanted: Callable[[str], bool]) -> dict[str, list[Comparison]]:
    """Per reference node: what its candidate counterpart actually reads for each activation input. That is the
    paired tensor, or a converted copy of it (Cast, Q/DQ): then the conversion's own error is measured."""
    reads: dict[str, list[Comparison]] = {}
    for ref_node, cand_node in pairing.nodes:
        for ref_in, cand_in in zip(ref_node.input, cand_node.input, strict=False):
            source = reference.origin(ref_in)
            if not cand_in or source not in pairing.tensors or not wanted(source):
                continue
            paired = pairing.tensors[source]
            converted = cand_in != paired and candidate.origin(cand_in) == candidate.origin(paired)
            reads.setdefault(ref_node.name or ref_node.output[0], []).append(
                (source, cand_in if converted else paired))
    return reads


def _chunks(items: Sequence[Comparison], size: int) -> Iterator[list[Comparison]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _run_exposed(graph: _Graph, names: list[str], x: np.ndarray, providers: Sequence[str]) -> dict[str, np.ndarray]:
    """Run with `names` as the graph's only outputs; optimisation off so every node runs as written."""
    if not names:
        return {}
    outputs = list(graph.model.graph.output)
    del graph.model.graph.output[:]
    graph.model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    try:
        exposed = graph.model.SerializeToString()
    finally:
        del graph.model.graph.output[:]
        graph.model.graph.output.extend(outputs)
    with OnnxRuntimeRunner(exposed, providers=providers, optimization="disable") as runner:
        first = runner.input_specs()[0]
        return runner.infer({first.name: first.feed(x)})  # fed as parity's comparison feeds it


def tensor_error(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(relative L2 error, cosine) of a candidate tensor; inf / nan when the candidate is not finite."""
    r, c = reference.astype(np.float64).ravel(), candidate.astype(np.float64).ravel()
    if not np.all(np.isfinite(c)):
        return math.inf, math.nan
    norm_r, norm_c = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    error = float(np.linalg.norm(c - r)) / max(norm_r, 1e-6 * math.sqrt(max(r.size, 1)))
    cosine = 1.0 if norm_r == norm_c == 0.0 else (float(np.dot(r, c)) / (norm_r * norm_c) if norm_r * norm_c else 0.0)
    return error, cosine


def _tensor_errors(reference: _Graph, candidate: _Graph, comparisons: Sequence[Comparison], x: np.ndarray,
                   providers: Sequence[str]) -> dict[Comparison, tuple[float, float]]:
    errors: dict[Comparison, tuple[float, float]] = {}
    for chunk in _chunks(comparisons, CHUNK):
        # Graph inputs are not fetched (ONNX Runtime cannot return an input as an output): they are the feed.
        ref = {name: x for name in reference.inputs}
        ref.update(_run_exposed(reference, list(dict.fromkeys(r for r, _ in chunk if r not in ref)), x, providers))
        cand = {name: candidate.fed(name, x) for name in candidate.inputs}
        cand.update(_run_exposed(candidate, list(dict.fromkeys(c for _, c in chunk if c not in cand)), x, providers))
        for r_name, c_name in chunk:
            r, c = ref[r_name], cand[c_name]
            if r.shape == c.shape and np.issubdtype(r.dtype, np.floating) and np.issubdtype(c.dtype, np.floating):
                errors[(r_name, c_name)] = tensor_error(r, c)
    return errors


def _conversion_row(reference: _Graph, candidate: _Graph, read: Comparison, error: tuple[float, float],
                    input_error: float, floor: float) -> NodeError:
    producer = candidate.producer.get(read[1])
    chain, tensor = [], read[1]
    while tensor in candidate.producer and candidate.producer[tensor].op_type in PASSTHROUGH:
        chain.append(candidate.producer[tensor].op_type)
        tensor = candidate.producer[tensor].input[0]
    source = reference.producer.get(read[0])
    return NodeError(node=producer.name if producer is not None else read[1], op_type="+".join(reversed(chain)),
                     module=module_path(source) if source is not None else "", tensor=read[1], error=error[0],
                     input_error=input_error, growth=_growth(error[0], input_error, floor), cosine=error[1])


def _growth(error: float, input_error: float, floor: float) -> float:
    return (error + floor) / (input_error + floor) if math.isfinite(error) else math.inf


Upstream = tuple[float, tuple[str, ...]]  # (error, reference nodes without a compared output walked through)


def _upstream_errors(reference: _Graph, pairing: Pairing, errors: dict[Comparison, tuple[float, float]],
                     wanted: Callable[[str], bool]) -> Callable[[str], Upstream]:
    """The error of a reference activation: measured when it was compared, else the largest among the nearest
    compared activations it is computed from, with the uncompared nodes in between. A node whose input has no
    counterpart (fused or replaced in the candidate) must not read that input as exact, or it takes the blame
    for the error entering through it; those nodes are named, as the candidate computes them with this one."""
    known: dict[str, Upstream] = {}

    def error_of(tensor: str) -> Upstream:
        if tensor not in known:
            known[tensor] = (0.0, ())  # a cycle (none in a valid graph) or a weight ends the walk
            pair = (tensor, pairing.tensors.get(tensor, ""))
            producer = reference.producer.get(tensor)
            if pair in errors:
                known[tensor] = (errors[pair][0], ())
            elif producer is not None and wanted(tensor):
                ups = [error_of(reference.origin(i)) for i in producer.input if i and wanted(reference.origin(i))]
                names = (*(n for _, walked in ups for n in walked), producer.name or tensor)
                known[tensor] = (max((e for e, _ in ups), default=0.0), tuple(dict.fromkeys(names)))
        return known[tensor]

    return error_of


def _rows(reference: _Graph, candidate: _Graph, pairing: Pairing, reads: dict[str, list[Comparison]],
          errors: dict[Comparison, tuple[float, float]], floor: float,
          wanted: Callable[[str], bool]) -> list[NodeError]:
    """One row per compared reference node in topological order, preceded by rows for the conversions
    (Cast, Q/DQ) the candidate applies to its inputs."""
    rows: list[NodeError] = []
    shown: set[Comparison] = set()
    upstream = _upstream_errors(reference, pairing, errors, wanted)
    for node in reference.model.graph.node:
        outs = [(o, pairing.tensors[o]) for o in node.output if (o, pairing.tensors.get(o, "")) in errors]
        if not outs:
            continue
        ins = []
        measured = set()
        for read in reads.get(node.name or node.output[0], []):
            if read not in errors:
                continue
            ins.append(errors[read][0])
            measured.add(read[0])
            plain = (read[0], pairing.tensors[read[0]])
            if read != plain and read not in shown and plain in errors:
                shown.add(read)
                rows.append(_conversion_row(reference, candidate, read, errors[read], errors[plain][0], floor))
        walked = [upstream(reference.origin(i)) for i in node.input
                  if i and reference.origin(i) not in measured and wanted(reference.origin(i))]
        ins += [e for e, _ in walked]
        through = tuple(dict.fromkeys(n for _, names in walked for n in names))
        worst = max(outs, key=lambda pair: errors[pair][0])
        error, cosine = errors[worst]
        input_error = max(ins, default=0.0)
        rows.append(NodeError(node=node.name, op_type=node.op_type, module=module_path(node), tensor=worst[0],
                              error=error, input_error=input_error, growth=_growth(error, input_error, floor),
                              cosine=cosine, through=through))
    return rows


def localize(
    reference_onnx: str | os.PathLike[str],
    candidate_onnx: str | os.PathLike[str],
    x: np.ndarray,
    *,
    tolerance: float,
    top_k: int = TOP_K,
    providers: Sequence[str] = ("cpu",),
    progress: Progress | None = None,
) -> Localization:
    """Compare every intermediate tensor of `candidate_onnx` with `reference_onnx` on input `x` (one batch)."""
    say = progress or (lambda _msg: None)
    reference, candidate = _Graph(reference_onnx), _Graph(candidate_onnx)
    pairing = pair_tensors(reference, candidate)

    def wanted(name: str) -> bool:
        return name not in reference.initializers and (
            reference.float_tensors is None or name in reference.float_tensors or name in reference.inputs)

    reads = _node_inputs(pairing, reference, candidate, wanted)
    comparisons = [(r, c) for r, c in pairing.tensors.items() if wanted(r)]
    comparisons += list(dict.fromkeys(read for group in reads.values() for read in group if read not in comparisons))
    say(f"localising: {len(pairing.nodes)} nodes paired between {Path(reference_onnx).name} and "
        f"{Path(candidate_onnx).name}")
    errors = _tensor_errors(reference, candidate, comparisons, x, providers)
    if not errors:
        raise ParityError(f"no intermediate tensors of {candidate_onnx} could be paired with {reference_onnx}; "
                          "were they exported from the same model?")
    floor = tolerance / 100
    rows = _rows(reference, candidate, pairing, reads, errors, floor, wanted)
    first = next((n for n in rows if not n.error <= tolerance), None)
    top = sorted((n for n in rows if not n.error <= floor), key=lambda n: -n.growth)[:top_k]
    node_outputs = {o for node in reference.model.graph.node if node.op_type not in SKIPPED_OPS
                    for o in node.output if o and wanted(o)}
    return Localization(candidate=str(candidate_onnx), reference_onnx=str(reference_onnx), tolerance=tolerance,
                        compared=len(errors), unmatched=len(node_outputs - set(pairing.tensors)), first=first,
                        top=top)
