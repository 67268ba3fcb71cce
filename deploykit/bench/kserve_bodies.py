"""The requests bench --url sends: the model's inputs from its KServe v2 metadata, their shapes, and distinct
bodies built once before timing (JSON, or Triton's binary tensor extension), refused before building when they
would not fit in memory."""

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
from deploykit.io.images import sample_photographs

_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}
DISTINCT_BODIES = 8
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


def encoded_image(path: Path | None) -> bytes:
    """The bytes of --image, or a photograph (scikit-image) / generated pixels encoded as JPEG."""
    if path is not None:
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
                binary: bool, count: int = DISTINCT_BODIES, seed: int = 0) -> list[Body]:
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        arrays: dict[str, np.ndarray] = {}
        for spec in inputs:
            name, datatype, shape = spec["name"], spec["datatype"], shapes[spec["name"]]
            if datatype == "BYTES":
                arrays[name] = np.full(shape, image, dtype=object)
            elif datatype not in _NUMPY:
                raise InputError(f"input {name} has datatype {datatype}, which bench --url cannot generate")
            elif np.issubdtype(_NUMPY[datatype], np.floating):
                arrays[name] = rng.standard_normal(shape, dtype=np.float32).astype(_NUMPY[datatype])
            else:
                arrays[name] = np.zeros(shape, dtype=_NUMPY[datatype])
        bodies.append(_binary_body(arrays, inputs) if binary else _json_body(arrays, inputs))
    return bodies


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
