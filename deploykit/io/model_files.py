"""Reading an ONNX file a user hands a command: one reader, so every command refuses a missing, folder, empty,
truncated or non-ONNX file, or one whose external data is not beside it, with the same message before any work
(the commands used to differ: a folder "did not exist" for some, ONNX Runtime's own error for others)."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx

from deploykit.errors import InputError, first_line
from deploykit.io.metadata import read_metadata
from deploykit.io.onnx_graph_checks import (
    GraphProblem,
    check_graph,
    data_bytes,
    default_opset,
    embedded_tensors,
    outer_reads,
)


def require_file(path: str | os.PathLike[str], what: str, hint: str) -> Path:
    """`path` as a Path if it is a file, else an InputError naming `what` it should be, what it is instead (a
    folder, or nothing), and `hint`."""
    file = Path(path)
    if file.is_dir():
        raise InputError(f"{what} {file} is a folder, not a file; {hint}")
    if not file.is_file():
        raise InputError(f"{what} {file} does not exist; {hint}")
    return file


def require_one_input(label: object, names: Sequence[str], feeder: str) -> None:
    """Refuse a model that takes other than one input where `feeder` (calibration, parity) feeds it one image
    tensor: the other inputs would be missing from every feed (a ValueError deep in calibration, exit 3)."""
    if len(names) != 1:
        raise InputError(f"{label} takes {len(names)} inputs ({', '.join(names)}); {feeder} feeds a model one "
                         "image tensor N,C,H,W: export it with that one input (the others fixed inside it or derived "
                         "from it)")


def read_onnx(path: str | os.PathLike[str], *, external_data: bool = True,
              hint: str = "export one with `deploykit export`") -> onnx.ModelProto:
    """The ONNX model at `path`, its external data loaded unless `external_data` is False (the data files are
    checked either way), or an InputError naming what is wrong and, for a missing file, `hint`."""
    file = require_file(path, "ONNX model", hint)
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others for a non-ONNX file
        raise InputError(f"{file} is not a readable ONNX model ({first_line(exc)}); export it again") from None
    _check_structure(model, file)
    _type_outputs(model, file)
    _check_external_data(model, file)
    if external_data:
        try:
            onnx.load_external_data_for_model(model, str(file.parent))
        except Exception as exc:  # a data file shorter than its tensors say, unreadable, ...
            raise InputError(f"{file}: its external data cannot be read ({first_line(exc)}); copy it again "
                             "with the model") from None
    return model


def _type_outputs(model: onnx.ModelProto, file: Path) -> None:
    """Give a graph output declared without a type (ONNX Runtime runs it: the type comes from its producer) the
    type shape inference finds, so that every pass after reading sees one (the FP16 graph of such a model failed
    the ONNX checker); refuse one whose type cannot be found."""
    untyped = [o for o in model.graph.output if not o.type.tensor_type.elem_type and not o.type.WhichOneof("value")]
    if not untyped:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph inference refuses: the message below names the output
        inferred = onnx.ModelProto()
    found = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)
             if v.type.tensor_type.elem_type}
    for output in untyped:
        if output.name not in found:
            raise InputError(f"{file}: output {output.name} is declared without a type, and none can be inferred "
                             "from the node making it; export the model with typed outputs")
        output.type.CopyFrom(found[output.name])


def _check_structure(model: onnx.ModelProto, file: Path) -> None:
    """What no runtime can load, said before one tries (their messages name C++ functions): an empty graph, a
    graph without inputs or outputs, versions newer than the installed onnx knows, a name nothing makes, then
    the rest of what ONNX Runtime refuses (deploykit.io.onnx_graph_checks)."""
    graph = model.graph
    if not graph.node and not graph.input and not graph.output:
        raise InputError(f"{file} holds no ONNX graph (an empty or truncated file); export it again")
    if not graph.input:
        raise InputError(f"{file} takes no inputs (its graph has none); deploykit runs models that take an "
                         "image tensor: export the model with its input")
    if not graph.output:
        raise InputError(f"{file} has no outputs (its graph lists none); export the model with its outputs")
    newest = onnx.defs.onnx_opset_version()
    opset = default_opset(model)
    if model.ir_version > onnx.IR_VERSION or (opset is not None and opset > newest):
        raise InputError(f"{file} is ONNX IR version {model.ir_version}, opset {opset}; the installed onnx "
                         f"{onnx.__version__} reads up to IR version {onnx.IR_VERSION}, opset {newest}: export "
                         f"it with an opset up to {newest}, or upgrade onnx and onnxruntime")
    made = {*(v.name for v in graph.input), *(t.name for t in graph.initializer),
            *(t.values.name for t in graph.sparse_initializer), *(o for n in graph.node for o in n.output), ""}
    node = next((n for n in graph.node for i in (*n.input, *outer_reads(n)) if i not in made), None)
    if node is not None:
        name = next(i for i in (*node.input, *sorted(outer_reads(node))) if i not in made)
        raise InputError(f"{file}: node {node.name or node.op_type} reads {name!r}, which no node, input or "
                         "initializer makes (a broken graph); export it again")
    output = next((o.name for o in graph.output if o.name not in made), None)
    if output is not None:
        raise InputError(f"{file}: output {output!r} is made by no node (a broken graph); export it again")
    read_metadata(model, file)  # garbled deploykit.* metadata is refused here, naming the file
    try:
        check_graph(model)
    except GraphProblem as exc:
        raise InputError(f"{file} is a graph ONNX Runtime refuses: {exc.problem}; {exc.fix}") from None


def external_data_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files an ONNX model keeps tensors in beside itself (model.onnx.data), as its tensors name them
    (relative to the model's folder); [] for a model that keeps them inside, or a file that is not ONNX. A byte
    search for the `location` key rules most files out without parsing them."""
    file = Path(path)
    try:
        with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(b"location") < 0:
                return []
        model = onnx.load(str(file), load_external_data=False)
    except Exception:  # an empty, unreadable or non-ONNX file has no external data (its reader says why)
        return []
    return _locations(model, file)


def _locations(model: onnx.ModelProto, file: Path) -> list[Path]:
    return list(dict.fromkeys(file.parent / location for _, location, _, _ in _external(model)))


def _external(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str, str, str]]:
    """(tensor, location, offset, length) of each tensor kept in a file beside the model, as written ("" where
    the key is absent)."""
    for tensor in embedded_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            keys = {e.key: e.value for e in tensor.external_data}
            if keys.get("location"):
                yield tensor, keys["location"], keys.get("offset", ""), keys.get("length", "")


def _check_external_data(model: onnx.ModelProto, file: Path) -> None:
    """Each tensor kept beside the model lies within a regular file there, at the size its shape and type need,
    checked from the file sizes before any reading: which readers go on to read it (ONNX Runtime, onnx) differs
    by command, and theirs is a C++ message or a hang on a FIFO or /dev/zero."""
    for tensor, location, offset, length in _external(model):
        data, named = file.parent / location, f"{file} keeps tensor {tensor.name!r} in {location}"
        if os.path.isabs(location) or os.path.normpath(location).startswith(os.pardir):
            raise InputError(f"{named}, outside its folder, which ONNX Runtime refuses to read; copy the data file "
                             "beside the model and export it again")
        if data.is_dir():
            raise InputError(f"{named}, which is a folder, not a file; copy the model's data file with it")
        if not data.exists():
            raise InputError(f"{named}, which is not beside it; copy it with the model")
        if not data.is_file():
            raise InputError(f"{named}, which is not a regular file (a device or FIFO); copy the model's data file "
                             "with it")
        if not (offset or "0").isdigit() or not (length or "0").isdigit():
            raise InputError(f"{named} at offset {offset!r}, length {length!r}, which are not byte counts (a "
                             "corrupt file); export it again")
        need = data_bytes(tensor)
        start, size = int(offset or 0), data.stat().st_size
        if int(length or 0) not in (0, need) or start + need > size:  # length 0 reads on to the end, as absent
            raise InputError(f"{named}, {int(length or 0) or need} bytes at offset {start}, but its shape "
                             f"{list(tensor.dims)} needs {need} and {location} holds {size} (a truncated copy or "
                             "another model's data); copy it again with the model")
