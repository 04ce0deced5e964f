import io

import numpy as np
import pytest
from PIL import Image

from service.runtime.images import GUTTER_GREY, GridLayout, encode_png, image_grid, to_grey


def test_png_decodes_to_the_same_pixels() -> None:
    grey = np.random.default_rng(0).integers(0, 256, size=(13, 29), dtype=np.uint8)
    png = encode_png(grey)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert (image.format, image.mode, image.size) == ("PNG", "L", (29, 13))
        np.testing.assert_array_equal(np.asarray(image), grey)


def test_grey_levels_put_ink_dark_on_white() -> None:
    np.testing.assert_array_equal(
        to_grey(np.array([0.0, 8.0, 16.0, 20.0, -3.0]), (0, 16)), [255, 128, 0, 0, 255]
    )


@pytest.mark.parametrize(("count", "rows", "columns"), [(1, 1, 1), (16, 4, 4), (10, 3, 4), (5, 2, 3)])
def test_grid_layout(count: int, rows: int, columns: int) -> None:
    images = np.zeros((count, 8, 8))
    sheet = image_grid(images, (0, 16), scale=4, gutter=2)
    layout = GridLayout.for_count(count, (8, 8), 4, 2)
    assert (layout.rows, layout.columns) == (rows, columns)
    assert sheet.shape == (rows * 32 + (rows + 1) * 2, columns * 32 + (columns + 1) * 2)


def test_grid_scales_each_pixel_into_a_block() -> None:
    image = np.zeros((2, 8, 8))
    image[1, 0, 0] = 16.0  # one ink pixel, top-left of the second cell
    sheet = image_grid(image, (0, 16), scale=3, gutter=1)
    assert sheet[0, 0] == GUTTER_GREY
    second_cell_left = 1 + 24 + 1
    np.testing.assert_array_equal(sheet[1:4, second_cell_left : second_cell_left + 3], 0)
    assert sheet[1, second_cell_left + 3] == 255
    assert (sheet[1:25, 1:25] == 255).all()  # first cell is all background


@pytest.mark.parametrize("shape", [(0, 8, 8), (8, 8)])
def test_grid_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected images"):
        image_grid(np.zeros(shape), (0, 16))


def test_png_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), dtype=np.float32))
