"""Mask and heatmap pictures: the VOC palette, exact geometry, and pixels that differ exactly where the maps do."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploykit.errors import InputError, OutputExists
from deploykit.io.metadata import ModelMetadata
from deploykit.parity.pictured import PicturedInput, Pictures
from deploykit.report.masks import (
    CAPTION,
    EDGE_FLIP,
    GAP,
    INTERIOR_FLIP,
    MaskRow,
    SaliencyRow,
    colorize,
    pictures_png,
    png_data_uri,
    saliency_picture,
    saliency_png,
    segmentation_picture,
    segmentation_png,
    voc_palette,
    write_png,
)
from deploykit.types import IMAGENET

H, W = 40, 60


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _row(candidate_change: bool = True) -> MaskRow:
    """Class 0 left, 15 right (edge between columns 29 and 30); the candidate paints an interior block of class 1
    (rows 5-14, columns 5-14) and flips column 30 (on the edge) to class 0."""
    reference = np.zeros((H, W), dtype=np.int64)
    reference[:, 30:] = 15
    candidate = reference.copy()
    if candidate_change:
        candidate[5:15, 5:15] = 1
        candidate[:, 30] = 0
    image = np.full((H, W, 3), 200, dtype=np.uint8)
    image[..., 0] = 90
    return MaskRow(image=image, reference=reference, candidates=(candidate,))


def _panel(picture: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return picture[top:bottom, left:right]


def test_voc_palette_matches_the_published_colours() -> None:
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0] and palette[4].tolist() == [0, 0, 128]
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[20].tolist() == [0, 64, 128]  # tv/monitor
    assert palette[255].tolist() == [224, 224, 192]  # void
    assert len({tuple(c) for c in palette[:21].tolist()}) == 21
    assert colorize(np.array([[0, 15]])).tolist() == [[[0, 0, 0], [192, 128, 128]]]


def test_segmentation_png_decodes_with_the_grid_size() -> None:
    picture, grid = segmentation_picture([_row()], ["int8"], panel=80)
    assert grid.columns == 4 and grid.panel_width == 120
    decoded = _decode(segmentation_png([_row()], ["int8"], panel=80))
    assert decoded.shape[1] == grid.width == GAP + 4 * (120 + GAP)
    assert decoded.shape[:2] == (picture.height, picture.width)
    _, two = segmentation_picture([_row(), _row()], ["int8"], panel=80)
    assert two.box(1, 0)[1] - grid.box(0, 0)[1] == CAPTION + 80 + GAP
    row = _row()
    pair = MaskRow(image=row.image, reference=row.reference, candidates=(row.reference, *row.candidates))
    assert _decode(segmentation_png([pair], ["fp16", "int8"], panel=80)).shape[1] == GAP + 6 * (120 + GAP)
    three = _decode(segmentation_png([_row()] * 3, ["int8"], panel=80))
    assert three.shape[0] - decoded.shape[0] == 2 * (CAPTION + 80 + GAP)  # the legend keeps its height


def test_difference_panel_marks_interior_and_edge_flips_only_where_masks_differ() -> None:
    _, grid = segmentation_picture([_row()], ["int8"], panel=H)  # panel at map size: one pixel per pixel
    picture = _decode(segmentation_png([_row()], ["int8"], panel=H))
    reference, candidate, difference = (_panel(picture, grid.box(0, c)) for c in (1, 2, 3))
    assert reference.shape == (H, W, 3)
    assert (reference[0, 0] == 0).all() and reference[0, 40].tolist() == [192, 128, 128]
    assert candidate[10, 10].tolist() == [128, 0, 0] and candidate[20, 30].tolist() == [0, 0, 0]
    assert difference[10, 10].tolist() == list(INTERIOR_FLIP)
    assert difference[20, 30].tolist() == list(EDGE_FLIP)
    agree = difference[30, 45]
    assert agree[0] == agree[1] == agree[2] < 128  # dimmed grey image where they agree
    flips = np.all(difference == INTERIOR_FLIP, axis=2) | np.all(difference == EDGE_FLIP, axis=2)
    assert flips.sum() == 100 + H
    same = _decode(segmentation_png([_row(candidate_change=False)], ["fp32"], panel=H))
    unchanged = _panel(same, grid.box(0, 3))
    assert not (np.all(unchanged == INTERIOR_FLIP, axis=2) | np.all(unchanged == EDGE_FLIP, axis=2)).any()


def test_a_single_flipped_pixel_survives_a_shrunk_panel() -> None:
    row = _row(candidate_change=False)
    candidate = row.reference.copy()
    candidate[21, 10] = 1
    shrunk = MaskRow(image=row.image, reference=row.reference, candidates=(candidate,))
    _, grid = segmentation_picture([shrunk], ["int8"], panel=10)  # maps 4x smaller than the 40 x 60 maps
    difference = _panel(_decode(segmentation_png([shrunk], ["int8"], panel=10)), grid.box(0, 3))
    assert difference.shape == (10, 15, 3)
    assert np.all(difference == INTERIOR_FLIP, axis=2).sum() == 1
    assert difference[5, 2].tolist() == list(INTERIOR_FLIP)


def test_legend_shows_the_classes_present_and_only_those() -> None:
    picture, grid = segmentation_picture([_row()], ["int8"], class_names=["background", "aeroplane"], panel=H)
    legend = np.asarray(picture)[grid.rows_bottom:]
    palette = voc_palette()
    def shown(k: int) -> bool:
        return bool(np.all(legend == palette[k], axis=2).sum() >= 100)  # a 14 x 14 swatch
    assert shown(0) and shown(1) and shown(15)
    assert not shown(2) and not shown(20)
    assert np.all(legend == EDGE_FLIP, axis=2).any()


def test_saliency_difference_shows_the_image_where_equal_and_warm_where_higher() -> None:
    reference = np.tile(np.linspace(0.0, 1.0, W), (H, 1))
    candidate = reference.copy()
    candidate[:, :10] += 0.2
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    rows = [SaliencyRow(image=image, reference=reference, candidates=(candidate,))]
    _, grid = saliency_picture(rows, ["fp16"], panel=H)
    picture = _decode(saliency_png(rows, ["fp16"], panel=H))
    heat, difference = _panel(picture, grid.box(0, 1)), _panel(picture, grid.box(0, 3))
    assert difference[20, 40].tolist() == [58, 58, 58]  # the grey image at DIM brightness
    assert difference[20, 5].tolist() == [178, 24, 43]  # WARM: the panel's own largest difference
    assert heat[20, 55].mean() > heat[20, 2].mean()  # brighter where more salient
    tiny = reference.copy()
    tiny[:, :10] += 1e-3
    rows = [SaliencyRow(image=image, reference=reference, candidates=(tiny, candidate))]
    _, grid = saliency_picture(rows, ["fp16", "int8"], panel=H)
    picture = _decode(saliency_png(rows, ["fp16", "int8"], panel=H))
    for column in (4, 5):  # each difference on its own scale: FP16's 1e-3 is as visible as INT8's 0.2
        assert _panel(picture, grid.box(0, column))[20, 5].tolist() == [178, 24, 43]


def test_write_png_and_data_uri(tmp_path: Path) -> None:
    data = segmentation_png([_row()], ["int8"], panel=H)
    out = write_png(tmp_path / "masks.png", data, force=False)
    assert out.read_bytes() == data
    with pytest.raises(OutputExists):
        write_png(out, data, force=False)
    uri = png_data_uri(data)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == data


def test_class_names_come_from_metadata_extra() -> None:
    meta = ModelMetadata(model="m", task="segmentation", num_classes=2, preprocessing=IMAGENET, input_size=(8, 8),
                         input_names=("input",), output_names=("output",),
                         extra={"class_names": '["background", "cat"]'})
    assert meta.class_names == ("background", "cat")
    parsed = ModelMetadata.from_props(meta.to_props())
    assert parsed is not None and parsed.class_names == ("background", "cat")


def test_rows_that_do_not_fit_fail_clearly() -> None:
    row = _row()
    with pytest.raises(InputError, match="labels"):
        segmentation_png([row], ["fp16", "int8"])
    with pytest.raises(InputError, match="no inputs"):
        segmentation_png([], ["int8"])
    bad = MaskRow(image=row.image, reference=row.reference, candidates=(row.reference[:, :10],))
    with pytest.raises(InputError, match="shape"):
        segmentation_png([bad], ["int8"])


def test_pictures_png_draws_kept_inputs_by_task() -> None:
    row = _row()
    kept = PicturedInput(3, row.image, row.reference.astype(np.uint8), (row.candidates[0].astype(np.uint8),),
                         (0.1,))
    data = pictures_png(Pictures("segmentation", ("int8",), (kept,)), panel=H)
    assert np.array_equal(_decode(data), _decode(segmentation_png([row], ["int8"], panel=H)))
    saliency = PicturedInput(0, row.image, np.zeros((H, W), np.float32), (np.ones((H, W), np.float32),), (1.0,))
    assert _decode(pictures_png(Pictures("saliency", ("fp16",), (saliency,)), panel=H)).shape[1] == GAP + 4 * (W + GAP)
    with pytest.raises(InputError, match="no pictured inputs"):
        pictures_png(Pictures("saliency", ("fp16",), ()))
