"""Image files read as video frames: the one image reader and the one image-folder lister."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from videdit.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order (frame2 before frame10)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3], upright (EXIF orientation applied); one InputError line
    when it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: not a readable image ({type(error).__name__})") from None

