"""Reading an ONNX file a user hands a command: one reader, so every command refuses a missing, folder, empty,
truncated or non-ONNX file, or one whose external data is not beside it, with the same message before any work
(the commands used to differ: a folder "did not exist" for some, ONNX Runtime's own error for others)."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import onnx

from deploykit.errors import InputError, first_line


def require_file(path: str | os.PathLike[str], what: str, hint: str) -> Path:
    """`path` as a Path if it is a file, else an InputError naming `what` it should be, what it is instead (a
    folder, or nothing), and `hint`."""
    file = Path(path)
    if file.is_dir():
        raise InputError(f"{what} {file} is a folder, not a file; {hint}")
    if not file.is_file():
        raise InputError(f"{what} {file} does not exist; {hint}")
    return file


def read_onnx(path: str | os.PathLike[str], *, external_data: bool = True,
              hint: str = "export one with `deploykit export`") -> onnx.ModelProto:
    """The ONNX model at `path`, its external data loaded unless `external_data` is False (the data files are
    checked either way), or an InputError naming what is wrong and, for a missing file, `hint`."""
    file = require_file(path, "ONNX model", hint)
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others for a non-ONNX file
        raise InputError(f"{file} is not a readable ONNX model ({first_line(exc)}); export it again") from None
    if not model.graph.input or not model.graph.output:
        raise InputError(f"{file} holds no ONNX graph (an empty or truncated file); export it again")
    for data in _locations(model, file):
        if not data.is_file():
            raise InputError(f"{file} keeps tensors in {os.path.relpath(data, file.parent)}, which is not beside "
                             "it; copy it with the model")
    if external_data:
        try:
            onnx.load_external_data_for_model(model, str(file.parent))
        except Exception as exc:  # a data file shorter than its tensors say, unreadable, ...
            raise InputError(f"{file}: its external data cannot be read ({first_line(exc)}); copy it again "
                             "with the model") from None
    return model


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
    found: dict[Path, None] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if location:
                found[file.parent / location] = None
    return list(found)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers, and constant attributes of its nodes and their subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)
