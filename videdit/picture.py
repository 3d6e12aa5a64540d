"""Labelled pictures for people to look at: the one font, a label drawn on a strip, an image scaled to fit, and a
contact sheet of labelled cells (the preview's sheet, the comparison video's panels). PIL only; the same input
gives the same pixels (PIL's bundled font, no system fonts)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

BACKGROUND = (24, 24, 24)
INK = (235, 235, 235)
LABEL_PX = 14  # text height of labels


@lru_cache(maxsize=4)
def font(size: int = LABEL_PX):
    """PIL's bundled font at `size` pixels (the same on every machine with this Pillow)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def label_strip(text: str, width: int, size: int = LABEL_PX) -> np.ndarray:
    """A dark strip `width` wide holding `text` (cut to fit), uint8 HWC RGB."""
    from PIL import Image, ImageDraw

    height = size + 8
    strip = Image.new("RGB", (max(int(width), 1), height), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    shown = text
    while shown and draw.textlength(shown, font=font(size)) > width - 8:
        shown = shown[:-2] + "…" if len(shown) > 2 else ""
    draw.text((4, 4), shown, fill=INK, font=font(size))
    return np.asarray(strip)


def fit(image: np.ndarray, max_width: int, max_height: int | None = None) -> np.ndarray:
    """`image` scaled down (never up) to fit max_width x max_height, aspect kept (PIL's antialiased bilinear)."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = min(1.0, max_width / width, (max_height / height) if max_height else 1.0)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def labelled(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with a label strip above it."""
    return np.concatenate([label_strip(text, image.shape[1]), image], axis=0)


def sheet(cells: list[list[np.ndarray]], column_labels: list[str], row_labels: list[str], gap: int = 4) -> np.ndarray:
    """A contact sheet: cells[row][column] (uint8 HWC, any sizes: each is centred in its slot), a label above
    every column and one left of every row."""
    n_rows, n_cols = len(cells), len(column_labels)
    if n_rows != len(row_labels) or any(len(row) != n_cols for row in cells):
        raise ValueError(f"sheet: {n_rows} rows of {[len(r) for r in cells]} cells for {len(row_labels)} row labels "
                         f"and {n_cols} column labels")
    col_w = [max(cells[r][c].shape[1] for r in range(n_rows)) for c in range(n_cols)]
    row_h = [max(cell.shape[0] for cell in row) for row in cells]
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max([probe.textlength(t, font=font()) for t in row_labels] + [0])) + 12
    head_h = LABEL_PX + 8
    width = label_w + sum(col_w) + gap * (n_cols + 1)
    height = head_h + sum(row_h) + gap * (n_rows + 1)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    x = label_w + gap
    for c in range(n_cols):
        canvas[:head_h, x:x + col_w[c]] = label_strip(column_labels[c], col_w[c])
        x += col_w[c] + gap
    y = head_h + gap
    for r in range(n_rows):
        strip = label_strip(row_labels[r], label_w)
        canvas[y:y + strip.shape[0], :label_w] = strip
        x = label_w + gap
        for c in range(n_cols):
            cell = cells[r][c][..., :3]
            top, left = y + (row_h[r] - cell.shape[0]) // 2, x + (col_w[c] - cell.shape[1]) // 2
            canvas[top:top + cell.shape[0], left:left + cell.shape[1]] = cell
            x += col_w[c] + gap
        y += row_h[r] + gap
    return canvas
