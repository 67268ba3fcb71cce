"""model.py of NAME_pre and NAME_post, the two Python-backend steps of a deploykit image ensemble
(NAME_image = NAME_pre -> NAME -> NAME_post; see deploykit/package/images.py).

NAME_pre: `image` (the encoded PNG/JPEG file, BYTES of shape [1] per image) -> the model's input tensor,
preprocessed as the model's metadata says (deploykit.io.images.preprocess, the code parity uses), and `size`,
the image's own (height, width). NAME_post: the model's output and `size` -> `mask`, the class map (uint8 up to
256 classes) or the saliency map at the image's own size (deploykit.io.masks). A bad image is answered with
INVALID_ARG (HTTP 400) and the message; the other requests of the batch are unaffected.

The deploykit modules these need (numpy and Pillow only) are copied beside this file, so NVIDIA's container
needs only `pip install pillow`; they are imported from there first. Settings come from the config's `deploykit`
parameter (JSON).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if (Path(__file__).parent / "deploykit").is_dir():  # in a model repository: the copied modules come first
    sys.path.insert(0, str(Path(__file__).parent))

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.io.images import decode_image, preprocess
from deploykit.io.masks import prediction_at_size
from deploykit.package.triton_models import triton_settings
from deploykit.types import Preprocessing

pb_utils: Any = None


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        global pb_utils  # Triton's Python backend provides the module: importable elsewhere, runnable only there
        pb_utils, _, self.settings = triton_settings(args)
        self.preprocessing = Preprocessing.from_dict(self.settings["preprocessing"])

    def execute(self, requests: list[Any]) -> list[Any]:
        step = self._pre if self.settings["step"] == "pre" else self._post
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(step(request)))
            except (DeployKitError, ValueError) as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _pre(self, request: Any) -> list[Any]:
        encoded = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
        height, width = self.settings["input_size"]
        tensors, sizes = [], []
        for data in encoded[:, 0]:  # one image per row: [batch, 1]
            rgb = decode_image(bytes(data), max_bytes=self.settings["max_image_bytes"])
            tensors.append(preprocess(rgb, self.preprocessing, (height, width)))
            sizes.append(rgb.shape[:2])
        if len(set(sizes)) > 1:  # the masks of one request form one tensor: they need one size
            shown = ", ".join(f"{h}x{w}" for h, w in sizes)
            raise DeployKitError(f"the {len(sizes)} images of one request have different sizes ({shown}, height x "
                                 "width); send images of different sizes as separate requests")
        tensor = np.concatenate(tensors).astype(self.settings["input_dtype"])
        return [pb_utils.Tensor("tensor", tensor), pb_utils.Tensor("size", np.array(sizes, dtype=np.int32))]

    def _post(self, request: Any) -> list[Any]:
        scores = pb_utils.get_input_tensor_by_name(request, "scores").as_numpy()
        size = pb_utils.get_input_tensor_by_name(request, "size").as_numpy()
        masks = [prediction_at_size(s, self.settings["task"], self.settings["num_classes"],
                                         (int(hw[0]), int(hw[1]))) for s, hw in zip(scores, size, strict=True)]
        return [pb_utils.Tensor("mask", np.stack(masks))]
