"""Image grids and a dependency-free PNG encoder (zlib + struct) for the GAN's sample sheet.

The digits are 8x8 pixels in the raw 0..16 ink scale; a person cannot see much at that size, so each
pixel becomes a ``scale`` x ``scale`` block, ink dark on white (as the digits are usually drawn), with a
grey gutter between the cells.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GUTTER_GREY = 160


@dataclass(frozen=True)
class GridLayout:
    """Where the cells go: ``rows`` x ``columns`` cells of ``cell`` pixels, ``gutter`` pixels apart."""

    rows: int
    columns: int
    cell_height: int
    cell_width: int
    gutter: int

    @classmethod
    def for_count(cls, count: int, image_shape: tuple[int, int], scale: int, gutter: int) -> GridLayout:
        columns = math.ceil(math.sqrt(count))
        rows = math.ceil(count / columns)
        return cls(rows, columns, image_shape[0] * scale, image_shape[1] * scale, gutter)

    @property
    def height(self) -> int:
        return self.rows * self.cell_height + (self.rows + 1) * self.gutter

    @property
    def width(self) -> int:
        return self.columns * self.cell_width + (self.columns + 1) * self.gutter


def to_grey(images: np.ndarray, pixel_range: tuple[float, float]) -> np.ndarray:
    """uint8 grey levels: ink (the top of ``pixel_range``) black, background white."""
    low, high = pixel_range
    ink = np.clip((images.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    return np.round(255.0 * (1.0 - ink)).astype(np.uint8)


def image_grid(
    images: np.ndarray, pixel_range: tuple[float, float], *, scale: int = 8, gutter: int = 4
) -> np.ndarray:
    """A [H, W] uint8 sheet of ``images`` [n, h, w], row-major, each pixel scaled up ``scale`` times."""
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"expected images [n, h, w] with n >= 1, got shape {images.shape}")
    n, h, w = images.shape
    layout = GridLayout.for_count(n, (h, w), scale, gutter)
    sheet = np.full((layout.height, layout.width), GUTTER_GREY, dtype=np.uint8)
    cells = np.kron(to_grey(images, pixel_range), np.ones((1, scale, scale), dtype=np.uint8))
    for i in range(n):
        row, col = divmod(i, layout.columns)
        top = gutter + row * (layout.cell_height + gutter)
        left = gutter + col * (layout.cell_width + gutter)
        sheet[top : top + layout.cell_height, left : left + layout.cell_width] = cells[i]
    return sheet


def encode_png(grey: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a [H, W] uint8 array."""
    if grey.ndim != 2 or grey.dtype != np.uint8 or 0 in grey.shape:
        raise ValueError(f"expected a non-empty [H, W] uint8 array, got {grey.dtype} {grey.shape}")
    height, width = grey.shape
    # Each scanline is preceded by its filter type; 0 (None) keeps the encoder trivial.
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), grey]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join(
        [PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(raw, 9)), _chunk(b"IEND", b"")]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
