"""A model's output at an image's own size: class maps (argmax, nearest) and saliency maps (bilinear)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deploykit.errors import InputError
from deploykit.io.images import decode_image
from deploykit.io.masks import mask_dtype, prediction_at_size


def test_scores_become_a_uint8_class_map_at_the_image_size() -> None:
    scores = np.zeros((3, 2, 2), np.float32)
    scores[2, 0, 0] = scores[1, 1, 1] = 1.0  # class 2 top-left, 1 bottom-right, ties (class 0) elsewhere
    mask = prediction_at_size(scores, "segmentation", 3, (4, 6))
    assert mask.dtype == np.uint8 and mask.shape == (4, 6)
    assert mask[0, 0] == 2 and mask[3, 5] == 1 and mask[0, 5] == 0 and mask[3, 0] == 0


def test_a_class_map_is_only_resized_and_many_classes_stay_int32() -> None:
    labels = np.array([[0, 300], [7, 1]], np.int64)
    mask = prediction_at_size(labels, "segmentation", 301, (2, 4))
    assert mask.dtype == np.int32 and mask_dtype("segmentation", 301) == np.int32
    assert mask.tolist() == [[0, 0, 300, 300], [7, 7, 1, 1]]
    assert prediction_at_size(np.array([[[-1.0, 2.0]]], np.float32), "segmentation", 1, (1, 2)).tolist() == [[0, 1]]


def test_saliency_is_resized_bilinearly_as_float32() -> None:
    plane = np.array([[[0.0, 1.0]]], np.float32)
    out = prediction_at_size(plane, "saliency", 0, (3, 4))
    assert out.dtype == np.float32 and out.shape == (3, 4)
    assert out[0, 0] < out[0, 1] < out[0, 2] < out[0, 3]
    with pytest.raises(InputError, match="saliency"):
        prediction_at_size(np.zeros((2, 2, 2, 2), np.float32), "saliency", 0, (3, 4))


def test_decode_image_reads_png_and_refuses_what_is_not_one() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((5, 7, 3), 9, np.uint8)).save(buffer, format="PNG")
    rgb = decode_image(buffer.getvalue())
    assert rgb.shape == (5, 7, 3) and int(rgb[0, 0, 0]) == 9
    with pytest.raises(InputError, match="not a PNG, JPEG"):
        decode_image(b"not an image at all")
    with pytest.raises(InputError, match="at most 10"):
        decode_image(buffer.getvalue(), max_bytes=10)
    with pytest.raises(InputError, match="empty"):
        decode_image(b"")
    with pytest.raises(InputError, match="cannot read image"):
        decode_image(buffer.getvalue()[:40])  # truncated
