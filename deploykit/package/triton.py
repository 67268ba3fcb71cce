"""Triton Inference Server model repositories from built artifacts (or plain ONNX files).

Layout: OUT/<model name>/config.pbtxt and OUT/<model name>/<version>/model.onnx|model.plan|model.xml (+ the
artifact's companions, model.bin, and an ONNX model's external data under the names its tensors give). Each
config is validated by parsing it with Triton's own protobuf schema (tritonclient's model_config_pb2) when that
package is installed (the `triton` extra); each copied model is opened where its backend runs here, so a
repository whose copy would not load is never written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from deploykit.backends.base import BACKENDS, ONNX_RUNNER, Backend
from deploykit.errors import InputError, first_line, optional_import
from deploykit.io.digests import sha256_file
from deploykit.io.metadata import ModelMetadata, read_metadata
from deploykit.io.model_files import external_data_files, read_onnx, require_file
from deploykit.io.sidecar import read_sidecar, verify_sidecar

# The largest values Triton's ModelConfig fields and command line hold: counts and seconds are int32,
# max_queue_delay_microseconds is uint64.
INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1
ROOT_FILES = ("Dockerfile", "inferenceservice.yaml")  # what `package` writes beside the model folders
# A model's folder name, and its image models' (NAME_image, the longest), must fit a file name (255 bytes).
MAX_NAME = 200

_TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # -1 for dynamic; without the batch axis when the model batches

    def text(self) -> str:
        return (f'  {{\n    name: "{pbtxt_escape(self.name)}"\n    data_type: {self.data_type}\n'
                f'    dims: [ {", ".join(map(str, self.dims))} ]\n  }}')


@dataclass(frozen=True)
class TritonModel:
    name: str
    platform: str  # onnxruntime_onnx | tensorrt_plan
    file_name: str
    source: Path
    max_batch_size: int
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    kind: str  # KIND_CPU | KIND_GPU
    backend: str = ""  # Triton's `backend:` (OpenVINO) in place of a platform
    companions: tuple[str, ...] = ()  # suffixes of the files copied beside file_name (OpenVINO's .bin)
    parameters: tuple[tuple[str, str], ...] = ()  # config `parameters` (what a Python-backend model reads)
    metadata: ModelMetadata | None = field(default=None, compare=False)  # deploykit's, when the artifact has it
    external: tuple[str, ...] = ()  # an ONNX model's external-data files, relative to its folder
    runtime: str = ""  # deploykit's backend entry that runs it (to check that the copy loads)

    @property
    def serving(self) -> str:
        """What serves it in Triton: the platform, else the backend."""
        return self.platform or self.backend

    @property
    def files(self) -> list[tuple[Path, str]]:
        """(source file, name in the version folder): the artifact, then its companions."""
        target = Path(self.file_name)
        return [(self.source, self.file_name),
                *((self.source.with_suffix(s), target.with_suffix(s).name) for s in self.companions),
                *((self.source.parent / name, name) for name in self.external)]

    def config_text(self, instances: int, max_queue_delay_us: int) -> str:
        def tensors(field: str, items: Sequence[TritonTensor]) -> str:
            body = ",\n".join(t.text() for t in items)
            return f"{field} [\n{body}\n]"

        batching = (f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
                    if self.max_batch_size > 0 else "")
        return (
            f'name: "{self.name}"\n'
            + (f'platform: "{self.platform}"\n' if self.platform else f'backend: "{self.backend}"\n')
            + f'max_batch_size: {self.max_batch_size}\n'
            f'default_model_filename: "{self.file_name}"\n'
            f"{tensors('input', self.inputs)}\n{tensors('output', self.outputs)}\n{batching}"
            f"instance_group [\n  {{\n    count: {instances}\n    kind: {self.kind}\n  }}\n]\n"
            "version_policy: { latest { num_versions: 1 } }\n"
            + "".join(f'parameters {{\n  key: "{key}"\n  value {{ string_value: "{pbtxt_escape(value)}" }}\n}}\n'
                      for key, value in self.parameters)
        )


def pbtxt_escape(text: str) -> str:
    """`text` as the inside of a protobuf text-format string: quotes and backslashes escaped, control characters
    as octal escapes, the rest as UTF-8. Tensor names are the model's own (an ONNX name may hold any of them): an
    unescaped quote or newline made the config invalid, and a backslash changed the name Triton read."""
    return "".join(f"\\{ch}" if ch in '\\"' else f"\\{ord(ch):03o}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch
                   for ch in text)


def _onnx_tensors(values: Sequence[onnx.ValueInfoProto], batched: bool) -> tuple[TritonTensor, ...]:
    tensors = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if tensor_type.elem_type not in _TRITON_TYPES:
            raise InputError(f"tensor {value.name} has ONNX type {tensor_type.elem_type}, which Triton does not take")
        kept = dims[1:] if batched else dims
        tensors.append(TritonTensor(value.name, _TRITON_TYPES[tensor_type.elem_type], tuple(kept)))
    return tuple(tensors)


def _model_name(path: Path, given: str | None) -> str:
    # model.int8.ort.onnx -> model_int8: keep the precision in the name, drop the file-type suffixes
    stem = path.name
    for suffix in sorted({b.suffix for b in BACKENDS.values() if b.suffix} | {".onnx"}, key=len, reverse=True):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    if given is not None and not given:  # `--name ''` took the file's name without a word
        raise InputError("--name is empty; give the model a name (letters, digits, _ . -) or leave --name out for "
                         "the file's")
    name = given or re.sub(r"[^A-Za-z0-9_-]", "_", stem)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InputError(f"model name {name!r} has characters Triton does not allow; use letters, digits, _ . -")
    if name.startswith("."):  # "..", "." or a hidden folder: the model's folder would not be one in the repository
        raise InputError(f"model name {name!r} starts with a dot; it names a model folder in the repository: start "
                         "it with a letter or digit")
    if name.casefold() in {f.casefold() for f in ROOT_FILES}:
        raise InputError(f"model name {name!r} is a file `package` writes at the repository's root; choose another "
                         "with --name")
    if len(name) > MAX_NAME:
        raise InputError(f"model name {name[:24]}... has {len(name)} characters; at most {MAX_NAME} (its folder and "
                         f"its image models' must fit a file name): give a shorter --name")
    return name


def describe_artifact(path: str | os.PathLike[str], *, name: str | None = None, max_batch_size: int = 8) -> TritonModel:
    """What Triton needs to know about one artifact: platform, file, I/O tensors, batching."""
    file = require_file(path, "artifact", "build one with `deploykit build-engine`")
    sidecar = read_sidecar(file)
    entry = BACKENDS.get(sidecar.backend) if sidecar else (ONNX_RUNNER if file.suffix == ".onnx" else None)
    if entry is None or not entry.servable:
        raise InputError(f"{file} is neither an .onnx model nor an artifact with a deploykit sidecar")
    graph_file = file
    if not entry.runs_onnx:
        # A plan's I/O is that of the ONNX it was built from, which the sidecar names.
        graph_file = Path(str(sidecar.build_options.get("onnx_path", ""))) if sidecar else Path()
        if not graph_file.is_file():
            raise InputError(f"{file}: its sidecar does not name a readable source ONNX; rebuild with build-engine")
    missing = [f.name for f in entry.files(file)[1:] if not f.is_file()]
    if missing:
        raise InputError(f"{file} has no {', '.join(missing)} beside it; copy it with the artifact or rebuild")
    if sidecar is not None:
        verify_sidecar(file, sidecar, backend=entry.name, suffixes=entry.suffixes,
                       companions=dict(zip(entry.companions, entry.files(file)[1:], strict=True)))
    platform, file_name, kind = entry.triton_platform, entry.triton_file, entry.triton_kind
    proto = read_onnx(graph_file, external_data=False)
    graph = proto.graph
    first = graph.input[0].type.tensor_type.shape.dim
    batched = bool(first) and not first[0].HasField("dim_value") and max_batch_size > 0
    return TritonModel(
        name=_model_name(file, name), platform=platform, file_name=file_name, source=file,
        max_batch_size=max_batch_size if batched else 0,
        inputs=_onnx_tensors(graph.input, batched), outputs=_onnx_tensors(graph.output, batched), kind=kind,
        backend=entry.triton_backend, companions=entry.companions, external=_external(file, entry),
        runtime=entry.name,
        metadata=(ModelMetadata.from_record(sidecar.model) if sidecar else None) or read_metadata(proto),
    )


def _external(file: Path, entry: Backend) -> tuple[str, ...]:
    """The external-data files of an ONNX artifact, relative to its folder; each must exist and stay inside it."""
    if not entry.runs_onnx:
        return ()
    names = []
    for data in external_data_files(file):
        name = os.path.relpath(data, file.parent)
        if os.path.isabs(name) or name.split(os.sep)[0] == "..":
            raise InputError(f"{file} keeps tensors in {data}, outside its folder; a Triton version folder holds "
                             "only what is beside the model: move the data beside it (onnx.save with "
                             "save_as_external_data) and package again")
        if not data.is_file():
            raise InputError(f"{file} keeps tensors in {name}, which is not beside it; copy it with the model")
        names.append(name)
    return tuple(names)


def check_copy_loads(model: TritonModel, folder: Path) -> None:
    """Open the copied model where its backend runs here (ONNX Runtime and OpenVINO on the CPU), so that a
    repository missing a file its model needs is never written; a GPU backend's copy is compared byte for byte."""
    entry = BACKENDS[model.runtime]
    copied = folder / model.file_name
    if entry.device != "cpu" or not entry.availability().ready:
        for source, name in model.files:
            if sha256_file(source) != sha256_file(folder / name):
                raise InputError(f"the copy of {source} in {folder} differs from it; package again")
        return
    try:
        with entry.open(copied, None):
            pass
    except Exception as exc:  # named as in the repository: `folder` is a staging folder, gone when this is read
        inside = f"{folder.parent.name}/{folder.name}"
        first = first_line(exc, 300).replace(str(folder), inside)
        if not _loads(entry, model.source):
            raise InputError(f"{model.source} does not load in {entry.title} ({first}); package an artifact that "
                             f"{entry.title} runs (`deploykit build-engine` writes them)") from exc
        raise InputError(f"{model.source} does not load in {entry.title} once copied into the repository as "
                         f"{inside}/{model.file_name} ({first}); check that every file it needs is beside it") from exc


def _loads(entry: Backend, source: Path) -> bool:
    try:
        with entry.open(source, None):
            return True
    except Exception:
        return False


def validate_config(text: str) -> None:
    """Parse with Triton's ModelConfig protobuf: unknown fields, bad enums and syntax errors fail."""
    needs, install = "validating config.pbtxt", "pip install 'deploykit[triton]'"
    model_config_pb2 = optional_import("tritonclient.grpc.model_config_pb2", needs, install, "tritonclient[all]")
    text_format = optional_import("google.protobuf.text_format", needs, install, "protobuf")
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise InputError(f"generated config.pbtxt is not valid for Triton: {exc}") from exc
