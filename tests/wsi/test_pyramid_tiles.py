"""The tile-wise pyramidal TIFF writer: same file as the whole-image writer, readable everywhere, memory flat."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile

from mixsup_monai.demo.synthetic_slide import write_synthetic_slide
from mixsup_monai.wsi import open_slide
from mixsup_monai.wsi.pyramid import (
    PyramidalTiffWriter,
    _halve,
    downsample_rgb,
    pyramid_level_sizes,
    write_pyramidal_tiff,
    write_pyramidal_tiff_tiles,
)


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An RGB image with gradients and noise, so that every level and edge tile differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 200 // width, yy * 200 // height, (xx + yy) % 97], axis=-1)
    return (base + rng.integers(0, 50, (height, width, 3))).astype(np.uint8)


def bands(image: np.ndarray, height: int):
    for y in range(0, len(image), height):
        yield image[y : y + height]


def pages(path) -> list[tuple[np.ndarray, dict, tuple[int, ...]]]:
    """``(pixels, tags without offsets, tile byte counts)`` of every page."""
    out = []
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            tags = {t.name: t.value for t in page.tags.values() if t.name not in ("TileOffsets", "TileByteCounts")}
            out.append((page.asarray(), tags, tuple(page.databytecounts)))
    return out


@pytest.mark.parametrize("compression", ["zlib", "jpeg"])
def test_same_file_as_the_whole_image_writer(tmp_path, compression):
    """Level sizes, tags, pixels and even tile bytes equal write_pyramidal_tiff's, bands of odd heights included."""
    image = textured(1000, 1300)
    write_pyramidal_tiff(tmp_path / "whole.tif", image, mpp=0.5, compression=compression)
    sizes = write_pyramidal_tiff_tiles(
        tmp_path / "tiles.tif", (1300, 1000), bands(image, 77), 0.5, compression=compression
    )
    assert sizes == [(1300, 1000), (650, 500), (325, 250), (163, 125)] == pyramid_level_sizes((1300, 1000))
    whole, tiles = pages(tmp_path / "whole.tif"), pages(tmp_path / "tiles.tif")
    assert len(whole) == len(tiles) == 4
    for (a_pixels, a_tags, a_bytes), (b_pixels, b_tags, b_bytes) in zip(whole, tiles):
        np.testing.assert_array_equal(a_pixels, b_pixels)
        assert a_tags == b_tags
        assert a_bytes == b_bytes


def test_halving_is_downsample_rgb():
    rng = np.random.default_rng(3)
    for shape in [(7, 9, 3), (16, 16, 3), (33, 64, 1), (1, 1, 3)]:
        block = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(_halve(block, "area"), downsample_rgb(block, 2))


def test_slide_opens_in_every_reader_with_levels_and_mpp(tmp_path):
    from cucim import CuImage

    path = tmp_path / "slide.tif"
    sizes = write_pyramidal_tiff_tiles(path, (1300, 1000), bands(textured(1000, 1300), 256), 0.25)
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == tuple(sizes)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    cu = CuImage(str(path))
    assert cu.resolutions["level_count"] == len(sizes)
    assert tuple(cu.resolutions["level_dimensions"]) == tuple(sizes)
    with tifffile.TiffFile(path) as tif:
        assert [p.subfiletype for p in tif.pages] == [0, 1, 1, 1]
        assert [p.compression.name for p in tif.pages] == ["JPEG"] * 4
    with open_slide(path) as slide:  # the project's reader: cuCIM first, checked against tifffile's decoding
        assert slide.info.backend == "cucim"
        assert slide.info.mpp == pytest.approx(0.25)


def test_class_map_keeps_its_classes_and_opens_in_every_reader(tmp_path):
    """Nearest reduction of a one-channel map: level k is labels[::2**k, ::2**k], lossless LZW by default."""
    from cucim import CuImage

    labels = np.random.default_rng(0).integers(0, 4, (700, 900), dtype=np.uint8)
    path = tmp_path / "classes.tif"
    sizes = write_pyramidal_tiff_tiles(path, (900, 700), bands(labels, 100), 2.0, channels=1, resample="nearest")
    for k, (pixels, tags, _) in enumerate(pages(path)):
        np.testing.assert_array_equal(pixels, labels[:: 2**k, :: 2**k])
        assert tags["Compression"].name == "LZW"
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == tuple(sizes)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(2.0)
        np.testing.assert_array_equal(np.asarray(slide.read_region((0, 0), 1, (450, 350)))[..., 0], labels[::2, ::2])
    read = np.asarray(CuImage(str(path)).read_region((0, 0), (450, 350), 1))
    np.testing.assert_array_equal(read[..., 0], labels[::2, ::2])


def test_keyed_tile_rows_equal_plain_rows(tmp_path):
    """Reused keyed tiles (and reduced tiles made from keyed ones) give the pixels of writing every row."""
    rng = np.random.default_rng(1)
    variants = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    columns, rows = 11, 9  # 704 x 576, cropped to 690 x 560: edge tiles lose their keys
    choice = (np.arange(rows)[:, None] // 4 + np.arange(columns)[None, :] // 4) % 2
    image = np.concatenate([np.concatenate([variants[c] for c in row], axis=1) for row in choice])[:560, :690]
    with PyramidalTiffWriter(tmp_path / "keyed.tif", (690, 560), 0.5, tile_size=64, compression="zlib") as writer:
        for r in range(rows):
            writer.write_tile_row([variants[c] for c in choice[r]], keys=[int(c) for c in choice[r]])
    write_pyramidal_tiff(tmp_path / "plain.tif", image, mpp=0.5, tile_size=64, compression="zlib")
    for (a, _, _), (b, _, _) in zip(pages(tmp_path / "plain.tif"), pages(tmp_path / "keyed.tif"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_incomplete_image_writes_nothing(tmp_path):
    writer = PyramidalTiffWriter(tmp_path / "short.tif", (300, 300), 0.5)
    writer.write_rows(np.zeros((100, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="100 of 300 rows were written; no file was written"):
        writer.close()
    assert list(tmp_path.iterdir()) == []  # no TIFF, no spool folder
    with pytest.raises(ValueError, match="must be \\(h, w, 3\\) uint8"):
        PyramidalTiffWriter(tmp_path / "x.tif", (300, 300), 0.5).write_rows(np.zeros((10, 300), np.float32))


def _peak_bytes_writing(path, width: int, height: int) -> int:
    """tracemalloc peak of writing a ``width x height`` RGB JPEG pyramid from a generator of 64-row bands."""
    pattern = textured(64, width)

    def generate():
        for y in range(0, height, 64):
            yield np.roll(pattern, y, axis=1)[: min(64, height - y)]

    tracemalloc.start()
    try:
        write_pyramidal_tiff_tiles(path, (width, height), generate(), 0.5, num_workers=1)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_follows_a_row_of_tiles_not_the_image(tmp_path):
    """4x the height costs no memory; 2x the width costs about 2x a row of tiles -- far below the image."""
    square = _peak_bytes_writing(tmp_path / "a.tif", 4096, 4096)
    tall = _peak_bytes_writing(tmp_path / "b.tif", 4096, 16384)
    wide = _peak_bytes_writing(tmp_path / "c.tif", 8192, 8192)
    row_of_tiles = 256 * 4096 * 3  # 3 MiB
    assert tall < square + 2**20
    # measured 4.6 rows: the finished row and the waiting one above it, the coarser rows they make (half as wide,
    # each waiting with its pair), the generator's band and the encoded row
    assert square < 6 * row_of_tiles < 4096 * 4096 * 3 / 2
    assert wide < 2 * 6 * row_of_tiles < 8192 * 8192 * 3 / 4


def test_synthetic_slide_is_tissue_blobs_on_glass(tmp_path):
    info = write_synthetic_slide(tmp_path / "synthetic.tif", size=(6000, 5000), tissue_fraction=0.3, mpp=0.25)
    assert info["tissue_fraction"] == pytest.approx(0.3, abs=0.03)
    assert info["levels"] == pyramid_level_sizes((6000, 5000))
    with open_slide(tmp_path / "synthetic.tif") as slide:
        assert slide.info.level_dimensions == tuple(info["levels"])
        assert slide.info.mpp == pytest.approx(0.25)
        from mixsup_monai.wsi import detect_tissue

        # fat (adipose texture) is mostly empty cells: detection sees less tissue than was drawn
        assert 0.15 < detect_tissue(slide).fraction < 0.35


def test_synthetic_slide_from_real_tiles(tmp_path, shared_file):
    from PIL import Image

    tiles = [
        np.asarray(Image.open(shared_file(f"tiles/{name}")).convert("RGB"))
        for name in (
            "tissue-level0-4302-10273-4814-10785.png",
            "tissue-level2-1784-6289-5880-10386.png",
        )
    ]
    info = write_synthetic_slide(tmp_path / "real.tif", size=(4096, 4096), tiles=tiles, tissue_fraction=0.4, seed=2)
    assert info["tissue_fraction"] == pytest.approx(0.4, abs=0.04)
    with open_slide(tmp_path / "real.tif") as slide:
        region = slide.read_region((0, 0), (4096, 4096), slide.info.level_count - 1)
    assert region.std() > 5  # textures and glass, not a flat image
