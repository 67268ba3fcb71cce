"""The requests bench --url sends: the model's inputs from its KServe v2 metadata, their shapes, and distinct
bodies built once before timing (JSON, or Triton's binary tensor extension), refused before building when they
would not fit in memory. Tensors come from --inputs (an .npz of one array per input, or an .npy for a model
with one), checked against the metadata before any request; else they are generated: normal floats, and
integers and booleans in a stated small range (zeros sent every index or class id down one path)."""

from __future__ import annotations

import io
import json
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deploykit.bench.kserve_http import Endpoint
from deploykit.environment import check_memory
from deploykit.errors import BackendUnavailable, InputError, optional_import
from deploykit.io.images import check_images, read_arrays, sample_photographs

_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}
DISTINCT_BODIES = 8
# Generated integers: pixels for UINT8; for an index or a class id the metadata gives no valid range, so a small one
# (the model's first answer says when it is wrong) and the report says so.
INTEGER_RANGE = (0, 255)
# Measured (tracemalloc, 8 bodies of a 1x3x512x512 FP32 input): a JSON body keeps 20.6 bytes a value and building
# one takes 57 more at its peak (Python floats, then text); a binary body keeps 4.4 and building it takes 8.
JSON_KEPT, JSON_BUILDING = 21, 58


@dataclass(frozen=True)
class Body:
    data: bytes
    headers: dict[str, str]


def model_inputs(endpoint: Endpoint, model: str) -> list[dict[str, Any]]:
    """The model's inputs from its metadata, checked against KServe v2's schema (name, datatype, shape of
    integers) before any request is built from them."""
    path = f"/v2/models/{urllib.parse.quote(model)}"
    meta = endpoint.get(path)
    if meta is None:
        raise InputError(f"the endpoint has no model {model!r} (GET {endpoint.url}{path} failed); check --model "
                         "and --url")
    inputs = meta.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError(f"GET {endpoint.url}{path} lists no inputs (KServe v2 metadata has \"inputs\": [{{name, "
                         "datatype, shape}]); is --url a KServe v2 endpoint and --model a model with inputs?")
    for index, spec in enumerate(inputs):
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("datatype"), str)
                and isinstance(spec.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) for d in spec["shape"])):
            raise InputError(f"GET {endpoint.url}{path}: inputs[{index}] is {json.dumps(spec)[:120]}, not KServe "
                             "v2 metadata ({name, datatype, shape of integers}); check --url")
    return inputs


def resolve_shape(spec: Mapping[str, Any], input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The request shape of one input: --input-shape for an input of its rank, else its dims with the batch of
    --input-shape (1 without it), so that a model whose inputs differ in rank (a score map and a size) takes
    one --input-shape; an input with unknown dims besides the batch needs --input-shape of its rank."""
    dims = [int(d) for d in spec["shape"]]
    if spec["datatype"] == "BYTES":
        return tuple(1 if d < 0 else d for d in dims)
    if input_shape is not None and len(input_shape) == len(dims):
        return tuple(int(d) for d in input_shape)
    if any(d < 0 for d in dims[1:]):
        example = ",".join(str(d if d > 0 else 1 if i == 0 else 512) for i, d in enumerate(dims))
        given = f"--input-shape has {len(input_shape)} dimensions; " if input_shape is not None else ""
        raise InputError(f"{given}input {spec['name']} has unknown dimensions {dims}; give --input-shape of its "
                         f"{len(dims)} dimensions, e.g. {example}")
    batch = int(input_shape[0]) if input_shape else 1
    return tuple(batch if i == 0 and d < 0 else d for i, d in enumerate(dims))


def given_requests(path: Path, arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]],
                   input_shape: Sequence[int] | None) -> dict[str, list[np.ndarray]]:
    """The request tensors of each tensor input from --inputs (`arrays`, read by read_arrays): an array named as
    its input (or the only one, for a model with one tensor input), axis 0 the batch, split into requests of the
    batch the metadata fixes, else --input-shape's, else 1; at most DISTINCT_BODIES of them. Its rank, fixed
    dimensions and dtype must be the server's (a float array of another width or integers that fit are cast)."""
    tensors = [spec for spec in inputs if spec["datatype"] != "BYTES"]
    if not tensors:
        raise InputError(f"--inputs {path}: the model takes no tensors, only encoded BYTES ("
                         f"{', '.join(s['name'] for s in inputs)}); give an image as --image instead")
    named = {spec["name"] for spec in tensors}
    if len(arrays) == 1 and len(tensors) == 1:
        arrays = {tensors[0]["name"]: next(iter(arrays.values()))}
    missing, extra = sorted(named - set(arrays)), sorted(set(arrays) - named)
    if missing or extra:
        held = "one unnamed array (.npy)" if list(arrays) == [""] else f"arrays {sorted(arrays)}"
        raise InputError(f"--inputs {path} holds {held}, but the model's tensor inputs are "
                         f"{sorted(named)}: name each array as its input (np.savez(FILE, NAME=array))")
    requests = {spec["name"]: _requests(path, spec, arrays[spec["name"]], input_shape) for spec in tensors}
    rows = {name: arrays[name].shape[0] if arrays[name].ndim else 1 for name in requests}
    if len(set(rows.values())) > 1:
        raise InputError(f"--inputs {path}: the inputs have different numbers of rows ({rows}); give each input "
                         "the same number, row i of each making one input")
    return requests


def _requests(path: Path, spec: Mapping[str, Any], array: np.ndarray, input_shape: Sequence[int] | None) -> list[
        np.ndarray]:
    name, datatype, dims = spec["name"], spec["datatype"], [int(d) for d in spec["shape"]]
    where = f"--inputs {path}: input {name}"
    wanted = f"the server wants {datatype} {dims} (-1: any size)"
    if datatype not in _NUMPY:
        raise InputError(f"{where} has datatype {datatype}, which bench --url cannot send")
    if array.ndim != len(dims) or any(d >= 0 and d != n for d, n in zip(dims[1:], array.shape[1:], strict=False)):
        raise InputError(f"{where} has shape {list(array.shape)}; {wanted}: save arrays of that shape, axis 0 "
                         "the batch")
    if not dims:
        return [_cast(where, array, datatype)]
    if input_shape is not None and len(input_shape) == len(dims) and tuple(input_shape[1:]) != array.shape[1:]:
        raise InputError(f"{where} has shape {list(array.shape)}, --input-shape {list(input_shape)}: give only "
                         "the batch to differ (or drop --input-shape: the arrays give the shape)")
    batch = dims[0] if dims[0] >= 0 else int(input_shape[0]) if input_shape else 1
    if batch < 1 or array.shape[0] < batch:
        raise InputError(f"{where} has {array.shape[0]} row(s) along axis 0, a request takes {batch}: give at least "
                         f"{max(batch, 1)}")
    count = min(array.shape[0] // batch, DISTINCT_BODIES)
    return [_cast(where, array[i * batch:(i + 1) * batch], datatype) for i in range(count)]


def _cast(where: str, array: np.ndarray, datatype: str) -> np.ndarray:
    """`array` as the server's datatype: the same, a safe cast, a float of another width, or integers that fit;
    else an InputError. Float values must stay finite (NaN or inf would time another path)."""
    target = np.dtype(_NUMPY[datatype])
    same_kind_float = np.issubdtype(array.dtype, np.floating) and np.issubdtype(target, np.floating)
    integers = np.issubdtype(array.dtype, np.integer) and np.issubdtype(target, np.integer)
    fits = integers and (array.size == 0 or (np.iinfo(target.name).min <= array.min() and array.max() <= np.iinfo(
        target.name).max))
    if not (np.can_cast(array.dtype, target, "safe") or same_kind_float or fits):
        held = f"{array.dtype} values" + (" beyond its range" if integers else "")
        raise InputError(f"{where} holds {held}; the server wants {datatype} ({target.name}): save it as "
                         f"{target.name}")
    cast = np.ascontiguousarray(array, dtype=target)
    if np.issubdtype(target, np.floating) and not np.isfinite(cast).all():
        raise InputError(f"{where} holds NaN or infinite values (as {target.name}); give finite inputs")
    return cast


def read_inputs(path: Path) -> dict[str, np.ndarray]:
    """--inputs, read before the server is asked anything: an .npz or .npy."""
    if path.suffix.lower() not in (".npz", ".npy"):
        raise InputError(f"--inputs {path}: give an .npz of one array per model input (or an .npy for a model with "
                         "one); an encoded image for a BYTES input goes in --image")
    return read_arrays(path, "--inputs", "save one array per model input with np.savez(FILE.npz, NAME=array)")


def generated_note(inputs: Sequence[Mapping[str, Any]], given: Mapping[str, Any]) -> str | None:
    """What the report says of generated integer inputs, whose values the metadata cannot tell."""
    integers = [s["name"] for s in inputs if s["name"] not in given and s["datatype"] in _NUMPY
                and not np.issubdtype(_NUMPY[s["datatype"]], np.floating)]
    if not integers:
        return None
    low, high = INTEGER_RANGE
    return (f"integer input(s) {', '.join(integers)} got random values in [{low}, {high}] (booleans at random): an "
            "index or class id outside the model's range, or values that take another path than real ones, time "
            "something else; give --inputs FILE.npz of real values")


def encoded_image(path: Path | None) -> bytes:
    """The bytes of --image, or a photograph (scikit-image) / generated pixels encoded as JPEG."""
    if path is not None:
        check_images([path], "--image")  # a file that is not an image fails here, not as the server's 400
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read --image {path}: {exc.strerror}") from None
    try:
        rgb = sample_photographs(("astronaut",))[0]
    except BackendUnavailable:  # no scikit-image: pixels with some structure, so the JPEG is not trivially small
        rows = np.linspace(0, 255, 512, dtype=np.float32)
        rgb = np.stack([np.add.outer(rows, rows) / 2, np.outer(rows, np.ones(512)), rows[::-1][None].repeat(512, 0)],
                       axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def check_bodies_fit(inputs: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]], image: bytes,
                     binary: bool) -> None:
    """Refuse requests too large to build here, before building them: the shapes come from the server's metadata
    or --input-shape, and under overcommit the allocations succeed and the OOM killer ends bench without a word."""
    kept = building = 0
    for spec in inputs:
        count = math.prod(shapes[spec["name"]])
        if spec["datatype"] == "BYTES":
            kept, building = kept + count * len(image), building + count * len(image)
            continue
        itemsize = np.dtype(_NUMPY.get(spec["datatype"], np.float64)).itemsize
        kept += count * (itemsize + 1 if binary else JSON_KEPT)
        building += count * (2 * itemsize if binary else JSON_BUILDING)
    described = ", ".join(f"{s['name']} {'x'.join(map(str, shapes[s['name']]))}" for s in inputs)
    check_memory(DISTINCT_BODIES * kept + building, f"building {DISTINCT_BODIES} distinct requests of {described}",
                 "give a smaller --input-shape")


def make_bodies(inputs: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]], image: bytes,
                binary: bool, count: int = DISTINCT_BODIES, seed: int = 0,
                given: Mapping[str, Sequence[np.ndarray]] | None = None) -> list[Body]:
    """`count` distinct bodies (as many as --inputs gives, when it gives all tensor inputs): the given tensors in
    turn, the others generated."""
    rng = np.random.default_rng(seed)
    given = given or {}
    if given and len(given) == sum(s["datatype"] != "BYTES" for s in inputs):
        count = len(next(iter(given.values())))
    bodies = []
    for turn in range(count):
        arrays: dict[str, np.ndarray] = {}
        for spec in inputs:
            name, datatype, shape = spec["name"], spec["datatype"], shapes[spec["name"]]
            if datatype == "BYTES":
                arrays[name] = np.full(shape, image, dtype=object)
            elif name in given:
                arrays[name] = given[name][turn % len(given[name])]
            else:
                arrays[name] = _generated(name, datatype, shape, rng)
        bodies.append(_binary_body(arrays, inputs) if binary else _json_body(arrays, inputs))
    return bodies


def _generated(name: str, datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if datatype not in _NUMPY:
        raise InputError(f"input {name} has datatype {datatype}, which bench --url cannot generate")
    dtype = np.dtype(_NUMPY[datatype])
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    high = min(INTEGER_RANGE[1], int(np.iinfo(dtype.name).max))
    return rng.integers(INTEGER_RANGE[0], high, shape, endpoint=True).astype(dtype)


def _json_body(arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]]) -> Body:
    def values(array: np.ndarray) -> list[Any]:
        flat = array.ravel().tolist()
        return [v.decode("latin-1") if isinstance(v, bytes) else v for v in flat]

    document = {"inputs": [{"name": s["name"], "shape": list(arrays[s["name"]].shape), "datatype": s["datatype"],
                            "data": values(arrays[s["name"]])} for s in inputs]}
    return Body(json.dumps(document).encode(), {"Content-Type": "application/json"})


def _binary_body(arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]]) -> Body:
    """Triton's binary tensor extension, built by tritonclient (outputs come back binary as well)."""
    triton_http = optional_import("tritonclient.http", "binary requests", "pip install 'deploykit[triton]'",
                                  "tritonclient[all]")
    tensors = []
    for spec in inputs:
        tensor = triton_http.InferInput(spec["name"], list(arrays[spec["name"]].shape), spec["datatype"])
        tensor.set_data_from_numpy(arrays[spec["name"]], binary_data=True)
        tensors.append(tensor)
    data, json_size = triton_http.InferenceServerClient.generate_request_body(tensors)
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return Body(data, headers)
