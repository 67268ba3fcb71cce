"""Pictures of where the candidates disagree (issue 13, item 2), as PNG bytes for the self-contained HTML report.

One row per input (the inputs parity.classes.most_disagreeing picks, up to 4):
- segmentation: image | reference mask | each candidate's mask | each candidate's difference from the reference,
  masks in the PASCAL VOC palette (the field's convention, computed by `voc_palette`), a legend of the classes
  present (names when the model metadata has them, else indices). A difference panel shows the image dimmed,
  with disagreeing pixels in amber on the reference's class edges (within parity.classes.BOUNDARY_WIDTH px:
  usually benign) and in red inside classes (the blobs that matter, NVIDIA/TensorRT#4798).
- saliency: image | reference heatmap over the image | each candidate's | each candidate minus the reference
  over the dimmed image (blue below, red above, the image where equal), each on its own scale, whose largest
  |difference| the row caption prints.
Drawn from what the parity run kept (parity.pictured.Pictures: images and maps), never by re-running a model.
PIL only (a core dependency), so pictures need no optional package and their geometry is exact (`Grid`).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deploykit.errors import InputError
from deploykit.io.outputs import atomic_output
from deploykit.parity.classes import BOUNDARY_WIDTH, boundary_band
from deploykit.parity.pictured import Pictures
from deploykit.types import TASKS

PANEL = 160  # panel height in pixels; width follows the maps' aspect
GAP = 6
HEADER = 20  # column titles
CAPTION = 18  # one line above each row
SWATCH = 14
INK = (20, 20, 20)
EDGE_FLIP = (255, 176, 0)  # amber: differs within BOUNDARY_WIDTH px of a reference class edge
INTERIOR_FLIP = (220, 20, 60)  # crimson: differs inside a class
DIM = 0.45  # image brightness under a difference map
# Anchors of a dark-to-bright sequential ramp (black, purple, pink, orange, pale yellow), interpolated linearly:
# increasing lightness, so a heatmap reads in greyscale too.
HEAT = np.array([(0, 0, 4), (80, 18, 123), (182, 54, 121), (251, 136, 97), (252, 253, 191)], dtype=np.float64)
COOL, WARM = np.array((33, 102, 172), np.float64), np.array((178, 24, 43), np.float64)


@dataclass(frozen=True)
class MaskRow:
    """One input: the image (H,W,3 uint8) and class maps (H,W integers) of the reference and each candidate."""

    image: np.ndarray
    reference: np.ndarray
    candidates: tuple[np.ndarray, ...]
    title: str = ""


@dataclass(frozen=True)
class SaliencyRow:
    """One input: the image (H,W,3 uint8) and saliency maps (H,W floats) of the reference and each candidate."""

    image: np.ndarray
    reference: np.ndarray
    candidates: tuple[np.ndarray, ...]
    title: str = ""


@dataclass(frozen=True)
class Grid:
    """Where each panel lies in a picture: rows of `columns` panels, column titles above, a caption per row."""

    columns: int
    rows: int
    panel_width: int
    panel_height: int = PANEL

    @property
    def width(self) -> int:
        return GAP + self.columns * (self.panel_width + GAP)

    @property
    def rows_bottom(self) -> int:
        return HEADER + self.rows * (CAPTION + self.panel_height + GAP)

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a panel, right and bottom exclusive."""
        left = GAP + column * (self.panel_width + GAP)
        top = HEADER + row * (CAPTION + self.panel_height + GAP) + CAPTION
        return left, top, left + self.panel_width, top + self.panel_height


def voc_palette(count: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, count x 3 uint8: the bits of the class index are dealt out to the red, green
    and blue channels three at a time, from each channel's most significant bit down (VOCdevkit's labelcolormap)."""
    palette = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value, colour = index, [0, 0, 0]
        for bit in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
        palette[index] = colour
    return palette


def colorize(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """H,W class indices -> H,W,3 uint8 in the palette (VOC's by default; indices wrap at its length)."""
    colours = voc_palette() if palette is None else palette
    return colours[np.asarray(labels, dtype=np.int64) % len(colours)]


def _fit(rgb: np.ndarray, size: tuple[int, int], nearest: bool) -> Any:
    """An H,W,3 array as a PIL image of size (width, height)."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if image.size != size:
        image = image.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
    return image


def _font(size: int = 12) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _clip_text(draw: Any, text: str, width: int, font: Any) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _canvas(grid: Grid, titles: Sequence[str], captions: Sequence[str], legend_height: int) -> tuple[Any, Any]:
    canvas = Image.new("RGB", (grid.width, grid.rows_bottom + legend_height), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for column, title in enumerate(titles):
        left, _, right, _ = grid.box(0, column)
        draw.text((left, 3), _clip_text(draw, title, right - left, font), fill=INK, font=font)
    for row, caption in enumerate(captions):
        left, top, _, _ = grid.box(row, 0)
        draw.text((left, top - CAPTION + 2), _clip_text(draw, caption, grid.width - 2 * GAP, font), fill=INK,
                  font=font)
    return canvas, draw


def _legend(draw: Any, entries: Sequence[tuple[tuple[int, int, int] | np.ndarray, str]], top: int,
            width: int) -> int:
    """Swatches with labels, wrapped to `width`, from `top`; returns the height they take. With draw None
    nothing is drawn: the call measures the height the canvas needs."""
    font = _font()
    x, y, line = GAP, top + GAP, SWATCH + 6
    for colour, text in entries:
        advance = SWATCH + 4 + int(font.getlength(text)) + 14
        if x > GAP and x + advance > width:
            x, y = GAP, y + line
        if draw is not None:
            fill = tuple(int(v) for v in colour)
            draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=fill, outline=(90, 90, 90))
            draw.text((x + SWATCH + 4, y), text, fill=INK, font=font)
        x += advance
    return y + line + GAP - top


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # optimize=True: 4% smaller, 5x slower (1.4 s) at 4 rows of 513 x 513
    return buffer.getvalue()


def _check_rows(rows: Sequence[MaskRow] | Sequence[SaliencyRow], labels: Sequence[str]) -> tuple[int, int]:
    """The maps' (height, width), after checking every row has one map per label, all of one shape."""
    if not rows:
        raise InputError("no inputs to draw")
    shape = rows[0].reference.shape
    for row in rows:
        if len(row.candidates) != len(labels):
            raise InputError(f"a row has {len(row.candidates)} candidate maps for {len(labels)} labels")
        if row.reference.shape != shape or any(c.shape != shape for c in row.candidates):
            raise InputError(f"maps of one picture must share one shape; got {list(row.reference.shape)} and "
                             f"{[list(c.shape) for c in row.candidates]} against {list(shape)}")
        if row.image.ndim != 3 or row.image.shape[2] != 3:
            raise InputError(f"images must be H,W,3 RGB; got shape {list(row.image.shape)}")
    if len(shape) != 2:
        raise InputError(f"maps must be H,W; got shape {list(shape)}")
    return int(shape[0]), int(shape[1])


def _dimmed(image: np.ndarray) -> np.ndarray:
    """H,W,3 float: the image in grey at DIM brightness, the ground under difference maps and heatmaps."""
    return np.repeat(image.astype(np.float64).mean(axis=2, keepdims=True) * DIM, 3, axis=2)


def difference_map(image: np.ndarray, reference: np.ndarray, candidate: np.ndarray,
                   boundary_width: int = BOUNDARY_WIDTH, size: tuple[int, int] | None = None) -> np.ndarray:
    """H,W,3 uint8: the image dimmed to grey, EDGE_FLIP where the candidate differs on a reference class edge,
    INTERIOR_FLIP where it differs inside a class (interior wins where both fall in one pixel). `image` has the
    maps' height and width. With `size` (width, height) smaller than the maps, a panel pixel is marked when any
    map pixel under it differs, so that sparse flips do not vanish when a 513 x 513 map shrinks to a panel."""
    differ = reference != candidate
    band = boundary_band(np.asarray(reference, dtype=np.int64), boundary_width)
    edge, interior = differ & band, differ & ~band
    height, width = reference.shape
    if size is not None and size != (width, height):
        shrink = size[0] < width or size[1] < height
        edge, interior = (_resized_mask(m, size, shrink) for m in (edge, interior))
        image = np.asarray(_fit(image, size, nearest=False))
    out = _dimmed(image).astype(np.uint8)
    out[edge] = EDGE_FLIP
    out[interior] = INTERIOR_FLIP
    return out


def _resized_mask(mask: np.ndarray, size: tuple[int, int], any_under: bool) -> np.ndarray:
    """A bool mask at size (width, height): nearest when growing; when shrinking, True where any pixel under
    the panel pixel is (PIL's box filter averages the area, and any share above 0 counts)."""
    picture = Image.fromarray(mask.astype(np.uint8) * 255)
    if not any_under:
        return np.asarray(picture.resize(size, Image.Resampling.NEAREST)) > 0
    return np.asarray(picture.convert("F").resize(size, Image.Resampling.BOX)) > 0


def segmentation_picture(rows: Sequence[MaskRow], labels: Sequence[str], *,
                         class_names: Sequence[str] | None = None, panel: int = PANEL,
                         boundary_width: int = BOUNDARY_WIDTH) -> tuple[Any, Grid]:
    """The PIL image and its Grid (see the module docstring); `segmentation_png` for the bytes."""
    height, width = _check_rows(rows, labels)
    grid = Grid(columns=2 + 2 * len(labels), rows=len(rows), panel_width=max(1, round(panel * width / height)),
                panel_height=panel)
    size = (grid.panel_width, grid.panel_height)
    present = sorted({int(k) for row in rows for m in (row.reference, *row.candidates) for k in np.unique(m)})
    palette = voc_palette(max(256, present[-1] + 1))
    def name(k: int) -> str:
        return f"{k} {class_names[k]}" if class_names is not None and k < len(class_names) else f"class {k}"
    entries: list[tuple[tuple[int, int, int] | np.ndarray, str]] = [(palette[k], name(k)) for k in present]
    entries += [(EDGE_FLIP, f"differs within {boundary_width} px of a class edge"),
                (INTERIOR_FLIP, "differs inside a class")]
    titles = ["image", "reference", *labels, *(f"{label} vs reference" for label in labels)]
    captions = [row.title or _flip_caption(row, labels, boundary_width) for row in rows]
    canvas, draw = _canvas(grid, titles, captions, _legend(None, entries, 0, grid.width))
    for r, row in enumerate(rows):
        image = np.asarray(_fit(row.image, (width, height), nearest=False))
        panels = [(image, False), (colorize(row.reference, palette), True),
                  *((colorize(c, palette), True) for c in row.candidates),
                  *((difference_map(image, row.reference, c, boundary_width, size), True) for c in row.candidates)]
        for column, (rgb, nearest) in enumerate(panels):
            canvas.paste(_fit(rgb, size, nearest), grid.box(r, column)[:2])
    _legend(draw, entries, grid.rows_bottom, grid.width)
    return canvas, grid


def _flip_caption(row: MaskRow, labels: Sequence[str], boundary_width: int) -> str:
    band = boundary_band(np.asarray(row.reference, dtype=np.int64), boundary_width)
    parts = []
    for label, candidate in zip(labels, row.candidates, strict=True):
        differ = row.reference != candidate
        share = float(differ.mean())
        edges = f", {float((differ & band).sum()) / differ.sum():.0%} on edges" if differ.any() else ""
        parts.append(f"{label} {share:.2%} differ{edges}")
    return "; ".join(parts)


def segmentation_png(rows: Sequence[MaskRow], labels: Sequence[str], *, class_names: Sequence[str] | None = None,
                     panel: int = PANEL, boundary_width: int = BOUNDARY_WIDTH) -> bytes:
    """PNG bytes of the segmentation rows (module docstring); embed with `png_data_uri`, save with `write_png`."""
    picture, _ = segmentation_picture(rows, labels, class_names=class_names, panel=panel,
                                      boundary_width=boundary_width)
    return _png(picture)


def heat_colours(unit: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> ...,3 float RGB 0-255 along HEAT."""
    position = np.clip(unit, 0.0, 1.0) * (len(HEAT) - 1)
    low = np.minimum(position.astype(np.int64), len(HEAT) - 2)
    weight = (position - low)[..., None]
    return HEAT[low] * (1 - weight) + HEAT[low + 1] * weight


def heat_overlay(image: np.ndarray, saliency: np.ndarray, low: float, high: float) -> np.ndarray:
    """The saliency map as a heatmap over the dimmed grey image, scaled to [low, high]: opacity grows with the
    square root of saliency, so the image shows where nothing is salient and moderate values stay visible."""
    unit = np.clip((saliency.astype(np.float64) - low) / (high - low if high > low else 1.0), 0.0, 1.0)
    alpha = (0.85 * np.sqrt(unit))[..., None]
    out = _dimmed(image) * (1 - alpha) + heat_colours(unit) * alpha
    return np.asarray(np.clip(np.rint(out), 0, 255), dtype=np.uint8)


def signed_overlay(image: np.ndarray, difference: np.ndarray, scale: float) -> np.ndarray:
    """Differences over the dimmed grey image: the image where 0, COOL towards -scale, WARM towards +scale."""
    unit = np.clip(difference / (scale if scale > 0 else 1.0), -1.0, 1.0)[..., None]
    colour = np.where(unit < 0, COOL, WARM)
    out = _dimmed(image) * (1 - np.abs(unit)) + colour * np.abs(unit)
    return np.asarray(np.clip(np.rint(out), 0, 255), dtype=np.uint8)


def _saliency_caption(row: SaliencyRow, labels: Sequence[str], scales: Sequence[float]) -> str:
    span = float(row.reference.max() - row.reference.min()) or 1.0
    parts = [f"{label} max |difference| {scale:.3g} ({scale / span:.1%} of the reference's range)"
             for label, scale in zip(labels, scales, strict=True)]
    return "; ".join(parts) + "; each difference panel on its own scale"


def saliency_picture(rows: Sequence[SaliencyRow], labels: Sequence[str], *, panel: int = PANEL) -> tuple[Any, Grid]:
    """The PIL image and its Grid (see the module docstring); `saliency_png` for the bytes. Each difference panel
    is scaled to its own largest |difference| (printed in the row caption), so an FP16 candidate's small
    differences are visible beside an INT8 candidate's large ones."""
    height, width = _check_rows(rows, labels)
    grid = Grid(columns=2 + 2 * len(labels), rows=len(rows), panel_width=max(1, round(panel * width / height)),
                panel_height=panel)
    size = (grid.panel_width, grid.panel_height)
    entries: list[tuple[tuple[int, int, int] | np.ndarray, str]] = [
        *((heat_colours(np.array(v)), f"saliency {v:.0%} of the reference's range") for v in (0.1, 0.5, 1.0)),
        (COOL, "candidate below the reference"), (WARM, "candidate above the reference")]
    titles = ["image", "reference", *labels, *(f"{label} - reference" for label in labels)]
    scales = [[float(np.abs(c.astype(np.float64) - row.reference).max()) for c in row.candidates] for row in rows]
    captions = [row.title or _saliency_caption(row, labels, s) for row, s in zip(rows, scales, strict=True)]
    canvas, draw = _canvas(grid, titles, captions, _legend(None, entries, 0, grid.width))
    for r, (row, row_scales) in enumerate(zip(rows, scales, strict=True)):
        image = np.asarray(_fit(row.image, (width, height), nearest=False))
        low, high = float(row.reference.min()), float(row.reference.max())
        differences = [signed_overlay(image, c.astype(np.float64) - row.reference, scale)
                       for c, scale in zip(row.candidates, row_scales, strict=True)]
        panels = [(image, False), (heat_overlay(image, row.reference, low, high), False),
                  *((heat_overlay(image, c, low, high), False) for c in row.candidates),
                  *((d, True) for d in differences)]
        for column, (rgb, nearest) in enumerate(panels):
            canvas.paste(_fit(rgb, size, nearest), grid.box(r, column)[:2])
    _legend(draw, entries, grid.rows_bottom, grid.width)
    return canvas, grid


def saliency_png(rows: Sequence[SaliencyRow], labels: Sequence[str], *, panel: int = PANEL) -> bytes:
    picture, _ = saliency_picture(rows, labels, panel=panel)
    return _png(picture)


def pictures_png(pictures: Pictures, *, class_names: Sequence[str] | None = None, panel: int = PANEL) -> bytes:
    """The picture of a parity run's kept inputs (parity.pictured), by its task."""
    if not pictures.inputs:
        raise InputError("no pictured inputs: no candidate disagrees with the reference on any input")
    if TASKS[pictures.task].labelled:
        return segmentation_png([MaskRow(p.image, p.reference, p.candidates) for p in pictures.inputs],
                                pictures.labels, class_names=class_names, panel=panel)
    return saliency_png([SaliencyRow(p.image, p.reference, p.candidates) for p in pictures.inputs],
                        pictures.labels, panel=panel)


def png_data_uri(data: bytes) -> str:
    """A data: URI for an <img src=...> in the self-contained HTML report."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def write_png(path: str | os.PathLike[str], data: bytes, *, force: bool) -> Path:
    """Write PNG bytes atomically (io.outputs), refusing to overwrite without `force`."""
    with atomic_output(path, force=force) as tmp:
        tmp.write_bytes(data)
    return Path(path)
