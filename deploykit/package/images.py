"""Images in, masks out, as Triton models: NAME_image = ensemble(NAME_pre -> NAME -> NAME_post).

NAME_pre and NAME_post are Python-backend models (deploykit/package/triton_models/image_step.py) over the same
deploykit code parity uses (io/images.py preprocess, io/masks.py); NAME is the artifact's own model, which
NVIDIA's container serves with its ONNX Runtime, OpenVINO or TensorRT backend and `deploykit serve` with a
Python-backend Runner model. The encoded image travels as a BYTES tensor of shape [1] per image (`image`),
so image requests batch whatever their sizes; NAME's dynamic batcher merges the preprocessed tensors, which all
have the model's input size.
"""

from __future__ import annotations

import ast
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

import deploykit
from deploykit.errors import InputError
from deploykit.io.masks import mask_dtype
from deploykit.package.triton import TritonModel, TritonTensor, pbtxt_escape

IMAGE_INPUT, MASK_OUTPUT = "image", "mask"
STEP_FILE = Path(__file__).with_name("triton_models") / "image_step.py"
_NUMPY_TYPES = {"TYPE_FP32": "float32", "TYPE_FP16": "float16"}
_TRITON_OF = {np.dtype(np.uint8): "TYPE_UINT8", np.dtype(np.int32): "TYPE_INT32", np.dtype(np.float32): "TYPE_FP32"}


@dataclass(frozen=True)
class ImagePipeline:
    """The three models beside an artifact's own: its two Python steps and the ensemble that chains them."""

    pre: TritonModel
    post: TritonModel
    ensemble_name: str
    artifact: TritonModel

    @property
    def steps(self) -> tuple[TritonModel, TritonModel]:
        return self.pre, self.post

    def ensemble_text(self) -> str:
        """The ensemble's config.pbtxt: image -> NAME_pre -> NAME -> NAME_post -> mask."""
        def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
            maps = "".join(f'      input_map {{ key: "{pbtxt_escape(k)}" value: "{pbtxt_escape(v)}" }}\n'
                           for k, v in inputs.items())
            maps += "".join(f'      output_map {{ key: "{pbtxt_escape(k)}" value: "{pbtxt_escape(v)}" }}\n'
                            for k, v in outputs.items())
            return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}'

        art, mask = self.artifact, self.post.outputs[0]
        steps = ",\n".join((
            step(self.pre.name, {IMAGE_INPUT: IMAGE_INPUT}, {"tensor": "_tensor", "size": "_size"}),
            step(art.name, {art.inputs[0].name: "_tensor"}, {art.outputs[0].name: "_scores"}),
            step(self.post.name, {"scores": "_scores", "size": "_size"}, {MASK_OUTPUT: MASK_OUTPUT}),
        ))
        return (f'name: "{self.ensemble_name}"\nplatform: "ensemble"\nmax_batch_size: {art.max_batch_size}\n'
                f'input [\n{self.pre.inputs[0].text()}\n]\noutput [\n{mask.text()}\n]\n'
                f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}\n")


def why_no_images(artifact: TritonModel) -> str | None:
    """Why `artifact` cannot take encoded images (its NAME_image is not made), or None when it can."""
    if artifact.metadata is None:
        return "no deploykit metadata (its task and preprocessing are unknown)"
    if artifact.max_batch_size <= 0:
        return "no batch axis (--max-batch 0, or the model's input has a fixed batch)"
    tensor = artifact.inputs[0]
    if len(artifact.inputs) != 1 or tensor.data_type not in _NUMPY_TYPES or len(tensor.dims) != 3:
        return "its input is not one float N,C,H,W image tensor"
    if tensor.dims[0] not in (-1, 3):  # decoded images are RGB: a 1- or 4-channel model cannot take them
        channels = f"{tensor.dims[0]} channel{'' if tensor.dims[0] == 1 else 's'}"
        return f"its input has {channels} and images are read as 3-channel RGB"
    return None


def image_pipeline(artifact: TritonModel, *, max_image_bytes: int) -> ImagePipeline | None:
    """The image models for `artifact`, or None when it cannot take images (`why_no_images` says why)."""
    meta = artifact.metadata
    if meta is None or why_no_images(artifact) is not None:
        return None
    tensor = artifact.inputs[0]
    fixed = tuple(tensor.dims[1:])
    size = fixed if all(d > 0 for d in fixed) else tuple(meta.input_size)
    settings = {"task": meta.task, "num_classes": meta.num_classes, "preprocessing": meta.preprocessing.to_dict(),
                "input_size": list(size), "input_dtype": _NUMPY_TYPES[tensor.data_type],
                "max_image_bytes": max_image_bytes}
    size_tensor = TritonTensor("size", "TYPE_INT32", (2,))
    step = TritonModel(name="", platform="", backend="python", file_name="model.py", source=STEP_FILE,
                       max_batch_size=artifact.max_batch_size, inputs=(), outputs=(), kind="KIND_CPU")
    pre = replace(step, name=f"{artifact.name}_pre", inputs=(TritonTensor(IMAGE_INPUT, "TYPE_STRING", (1,)),),
                  outputs=(TritonTensor("tensor", tensor.data_type, (tensor.dims[0], *size)), size_tensor),
                  parameters=(("deploykit", json.dumps({**settings, "step": "pre"})),))
    mask = TritonTensor(MASK_OUTPUT, _TRITON_OF[mask_dtype(meta.task, meta.num_classes)], (-1, -1))
    post = replace(step, name=f"{artifact.name}_post", inputs=(replace(artifact.outputs[0], name="scores"),
                                                                size_tensor),
                   outputs=(mask,), parameters=(("deploykit", json.dumps({**settings, "step": "post"})),))
    return ImagePipeline(pre=pre, post=post, ensemble_name=f"{artifact.name}_image", artifact=artifact)


def vendored_modules() -> list[str]:
    """The deploykit files the image steps import (numpy and Pillow only), relative to the package: the closure of
    the module-level `deploykit` imports from STEP_FILE, with each package's __init__.py. Derived, not listed:
    a hand-kept list missed io/std_streams.py when io/images.py began importing it, and every image step failed
    to load in Triton."""
    root = Path(deploykit.__file__).parent
    found: set[Path] = {root / "__init__.py"}
    pending = [STEP_FILE]
    while pending:
        for node in ast.parse(pending.pop().read_text(encoding="utf-8")).body:  # what importing the file runs
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                parts = name.split(".")
                if parts[0] != "deploykit":
                    continue
                for depth in range(2, len(parts) + 1):  # each package on the way, then the module itself
                    path = root.joinpath(*parts[1:depth])
                    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
                    if file not in found:
                        found.add(file)
                        pending.append(file)
    return sorted(str(f.relative_to(root)) for f in found)


def copy_step_code(folder: Path) -> None:
    """The image step's model.py and the deploykit modules it imports, into a model's version folder."""
    shutil.copyfile(STEP_FILE, folder / "model.py")
    root = Path(deploykit.__file__).parent
    for relative in vendored_modules():
        target = folder / "deploykit" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, target)


def check_image_names(models: Sequence[TritonModel]) -> None:
    """No artifact's model name may be another's image-step name (seg and seg_pre would collide)."""
    taken = {m.name.casefold() for m in models}  # case-blind, as duplicate names are
    clashes = sorted(f"{m.name}{s}" for m in models for s in ("_pre", "_post", "_image")
                     if f"{m.name}{s}".casefold() in taken)
    if clashes:
        raise InputError(f"model name(s) {', '.join(clashes)} are also image-step names; rename with --name")

