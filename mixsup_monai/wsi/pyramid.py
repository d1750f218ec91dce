"""Writing pyramidal tiled TIFFs that OpenSlide and cuCIM both open with the right levels and MPP.

Two writers: :func:`write_pyramidal_tiff` takes a whole image in memory; :class:`PyramidalTiffWriter` (and
:func:`write_pyramidal_tiff_tiles`) takes the image one band of rows at a time and never holds more than a
row of tiles per level, for slides and slide maps of any size.
"""

from __future__ import annotations

import math
import os
import tempfile
from array import array
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import StrEnum, look_up_option

__all__ = [
    "PyramidResample",
    "PyramidalTiffWriter",
    "downsample_rgb",
    "pyramid_level_count",
    "pyramid_level_sizes",
    "write_pyramidal_tiff",
    "write_pyramidal_tiff_tiles",
]

#: TIFF compressions of the tile-wise writer and their tags. OpenSlide and tifffile decode all of them; cuCIM 26.x
#: decodes JPEG, LZW and RGB deflate, not one-channel deflate ("compression 8, sample_per_pixel 1 ... is not
#: supported yet"), hence LZW for maps. Deflate and LZW are written without a predictor, which crashes cuCIM.
_COMPRESSION_TAGS = {"jpeg": 7, "lzw": 5, "zlib": 8, "deflate": 8}
#: above this many bytes of tile data the file is a BigTIFF: classic TIFF offsets are 32 bit, and some readers
#: read them as signed.
_BIGTIFF_BYTES = 2**31


def pyramid_level_count(long_side: int, min_levels: int = 3, min_level_size: int = 256) -> int:
    """Number of levels of a pyramid halving ``long_side`` until it is below ``min_level_size`` (>= ``min_levels``)."""
    return max(min_levels, 1 + max(0, math.ceil(math.log2(max(long_side / min_level_size, 1)))))


def pyramid_level_sizes(size: Sequence[int], min_levels: int = 3, min_level_size: int = 256) -> list[tuple[int, int]]:
    """``(width, height)`` of each level of the pyramid of a level-0 ``size`` ``(width, height)``.

    Each level is ``ceil(previous / 2)``, as :func:`downsample_rgb` makes it; the count is
    :func:`pyramid_level_count` of the long side.
    """
    width, height = (int(s) for s in size)
    sizes = [(width, height)]
    for _ in range(pyramid_level_count(max(width, height), min_levels, min_level_size) - 1):
        width, height = -(-width // 2), -(-height // 2)
        sizes.append((width, height))
    return sizes


def _tifffile_compression(compression: str, quality: int) -> dict[str, Any]:
    """The ``compression`` / ``compressionargs`` keywords of ``TiffWriter.write`` for a compression name."""
    if compression == "jpeg":
        return {"compression": "jpeg", "compressionargs": {"level": quality}}
    return {"compression": compression}


def downsample_rgb(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter down-sampling of an ``(H, W, C)`` uint8 image by an integer ``factor``.

    Edges that do not fill a whole ``factor x factor`` box are averaged over the pixels present,
    so the result has ``ceil(H / factor) x ceil(W / factor)`` pixels like a slide scanner's pyramid.
    """
    if factor == 1:
        return image
    h, w = image.shape[:2]
    ph, pw = (-h) % factor, (-w) % factor
    padded = np.pad(image.astype(np.float32), ((0, ph), (0, pw), (0, 0)), mode="edge")
    hh, ww = padded.shape[0] // factor, padded.shape[1] // factor
    out = padded.reshape(hh, factor, ww, factor, -1).mean(axis=(1, 3))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_pyramidal_tiff(
    path: str | Path,
    image: np.ndarray,
    mpp: float,
    tile_size: int = 256,
    min_levels: int = 3,
    min_level_size: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
) -> list[tuple[int, int]]:
    """Write an RGB image as a tiled, pyramidal TIFF with every level in the main IFD chain.

    Levels are down-sampled by 2 until the long side is below ``min_level_size`` (at least
    ``min_levels`` levels). Each level is a separate top-level IFD -- not a SubIFD, which OpenSlide
    and cuCIM do not see -- and carries resolution tags in pixels per centimetre, so that OpenSlide
    reports ``openslide.mpp-x`` and cuCIM its spacing correctly.

    Args:
        path: output ``.tif``/``.tiff`` path.
        image: ``(H, W, 3)`` uint8 level-0 image.
        mpp: microns per pixel at level 0.
        tile_size: tile edge in pixels (multiple of 16).
        min_levels: minimum number of pyramid levels.
        min_level_size: stop adding levels once the long side is smaller than this.
        compression: TIFF compression of the tiles (``"jpeg"`` for a scanner-like file).
        quality: JPEG quality.

    Returns:
        The ``(width, height)`` of each level written.
    """
    import tifffile

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"write_pyramidal_tiff expects an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if mpp <= 0:
        raise ValueError(f"write_pyramidal_tiff: mpp must be > 0, got {mpp}")
    if tile_size % 16:
        raise ValueError(f"write_pyramidal_tiff: tile_size must be a multiple of 16, got {tile_size}")
    n_levels = pyramid_level_count(max(image.shape[:2]), min_levels, min_level_size)
    sizes = []
    compression_args = _tifffile_compression(compression, quality)
    with tifffile.TiffWriter(str(path), bigtiff=image.nbytes > 2**31) as tif:
        level_image = image
        for level in range(n_levels):
            if level > 0:
                level_image = downsample_rgb(level_image, 2)
            px_per_cm = 1e4 / (mpp * 2**level)
            tif.write(
                level_image,
                tile=(tile_size, tile_size),
                photometric="rgb",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                **compression_args,
            )
            sizes.append((level_image.shape[1], level_image.shape[0]))
    return sizes


class PyramidResample(StrEnum):
    """How a reduced level is made from the finer one (2 x 2 pixels -> 1)."""

    #: box filter, the mean of the 2 x 2 pixels rounded (:func:`downsample_rgb`): images, probability maps
    AREA = "area"
    #: the top-left pixel of each 2 x 2 box: label / class maps, whose values must not be averaged
    NEAREST = "nearest"


def _halve(block: np.ndarray, resample: str) -> np.ndarray:
    """``(h, w, C)`` uint8 -> ``(ceil(h / 2), ceil(w / 2), C)``, equal to ``downsample_rgb(block, 2)`` for ``"area"``.

    Integer arithmetic: the float mean of four uint8 values plus 0.5, floored, is exactly ``(sum + 2) // 4``.
    """
    if resample == PyramidResample.NEAREST:
        return block[::2, ::2]
    h, w = block.shape[:2]
    if h % 2 or w % 2:  # an odd edge is averaged over the pixels present, as downsample_rgb's edge padding does
        block = np.pad(block, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    total = block[0::2, 0::2].astype(np.uint16)
    total += block[1::2, 0::2]
    total += block[0::2, 1::2]
    total += block[1::2, 1::2]
    total += 2
    total >>= 2
    return total.astype(np.uint8)


class _TileEncoder:
    """Encodes ``(T, T, C)`` uint8 tiles to the bytes ``TiffWriter.write`` would store for the same settings."""

    def __init__(self, channels: int, compression: str, quality: int):
        import tifffile

        name = "zlib" if compression == "deflate" else compression
        self._compress = tifffile.TIFF.COMPRESSORS[_COMPRESSION_TAGS[name]]
        self._kwargs: dict[str, Any] = {}
        if name == "jpeg":
            self._kwargs = {"level": quality}
            if channels == 3:  # tifffile's RGB JPEG: YCbCr 4:2:0, the layout scanners write and every reader decodes
                self._kwargs.update(subsampling=(2, 2), colorspace="RGB", outcolorspace="YCBCR")
        self.write_kwargs = {
            "photometric": "rgb" if channels == 3 else "minisblack",
            **_tifffile_compression(name, quality),
        }

    def __call__(self, tile: np.ndarray) -> bytes:
        return self._compress(tile, **self._kwargs)


class _LevelSpool:
    """One pyramid level being written: its encoded tiles in a spool file, and a tile row waiting for its pair."""

    def __init__(self, size: tuple[int, int], tile_size: int, spool_path: Path):
        self.size = size
        self.columns = -(-size[0] // tile_size)
        self.rows = -(-size[1] // tile_size)
        self.file = open(spool_path, "w+b")  # noqa: SIM115 (closed by the writer's close / abort)
        self.lengths = array("Q")
        self.rows_done = 0
        #: the even tile row of the finer level, kept until the odd one makes the coarser row with it
        self.pending: list[tuple[int | None, np.ndarray]] | None = None

    def tiles(self) -> Iterator[bytes]:
        """The spooled tiles in row-major order."""
        self.file.flush()
        self.file.seek(0)
        for length in self.lengths:
            yield self.file.read(length)


class PyramidalTiffWriter:
    """Write a tiled pyramidal TIFF from bands of rows, holding about one row of tiles per level in memory.

    The layout is :func:`write_pyramidal_tiff`'s (every level a top-level IFD, resolution in pixels per
    centimetre so that OpenSlide reports ``openslide.mpp-x``, ``subfiletype=1`` on reduced levels, tiles
    zero-padded at the edges) and, for the same image and settings, so are the pixels: each reduced level is the
    2 x 2 box filter of the finer one (:func:`downsample_rgb`), or its top-left pixels with
    ``resample="nearest"``.

    Rows arrive top to bottom, in bands of any height (:meth:`write_rows`) or one row of tiles at a time
    (:meth:`write_tile_row`). Each completed row of tiles is encoded at once and appended to a spool file of its
    level (next to ``path``), and halved into the next level as soon as the row below it arrives; the TIFF itself
    is assembled from the spools by ``TiffWriter.write`` with an iterator of encoded tiles when the writer
    closes, because TIFF stores the levels one after the other. Memory: the band being filled
    (``tile_size x width x channels`` bytes), one waiting row of tiles per level (half as wide each level) and
    at most ``max_cached_tiles`` cached tiles; disk: the compressed file twice, until it closes.

    Tiles that repeat (glass, a few textures in a synthetic slide) can be given a ``key``: a key's tile is
    encoded once, and a reduced tile whose four finer tiles all have keys is computed and encoded once per
    combination of keys, so a large repetitive slide costs little more than its unique tiles.

    Args:
        path: output ``.tif`` / ``.tiff``; written when the writer closes (a temporary file next to it is
            renamed), never left half-written.
        size: level-0 ``(width, height)`` in pixels.
        mpp: microns per pixel at level 0.
        channels: 3 (RGB slides) or 1 (maps: probabilities scaled to 0..255, class indices).
        tile_size: tile edge in pixels (multiple of 16).
        resample: ``"area"`` (images, probabilities) or ``"nearest"`` (class maps) for the reduced levels.
        compression: ``"jpeg"`` (default for RGB), ``"lzw"`` (lossless, default for one channel: the lossless
            compression every reader here decodes on one channel) or ``"zlib"`` / ``"deflate"`` (lossless; cuCIM
            decodes it on RGB only).
        quality: JPEG quality.
        min_levels: minimum number of pyramid levels.
        min_level_size: levels are added until the long side is smaller than this.
        bigtiff: BigTIFF or classic TIFF; by default BigTIFF when the tiles exceed 2 GiB.
        num_workers: threads encoding a row of tiles (default ``min(2, cpu count)``; 1 encodes in this thread).
        max_cached_tiles: most keyed tiles (pixels and bytes) kept for reuse.

    Example::

        with PyramidalTiffWriter("map.tif", size=(50_000, 40_000), mpp=1.0, channels=1) as writer:
            for band in bands:  # (h, 50_000) uint8, top to bottom
                writer.write_rows(band)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: Sequence[int],
        mpp: float,
        channels: int = 3,
        tile_size: int = 256,
        resample: str = PyramidResample.AREA,
        compression: str | None = None,
        quality: int = 90,
        min_levels: int = 3,
        min_level_size: int = 256,
        bigtiff: bool | None = None,
        num_workers: int | None = None,
        max_cached_tiles: int = 256,
    ):
        self.path = Path(path)
        self.size = self._check_geometry(size, mpp, channels, tile_size)
        self.mpp, self.channels, self.tile_size = float(mpp), int(channels), int(tile_size)
        self.resample = look_up_option(resample, PyramidResample).value
        compression = ("jpeg" if channels == 3 else "lzw") if compression is None else compression
        self.compression = look_up_option(compression, tuple(_COMPRESSION_TAGS))
        self.bigtiff = bigtiff
        self.max_cached_tiles = int(max_cached_tiles)
        self.level_sizes = pyramid_level_sizes(self.size, min_levels, min_level_size)
        self.rows_written = 0
        self._encoder = _TileEncoder(self.channels, self.compression, quality)
        workers = min(2, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tile-encode") if workers > 1 else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spool_dir = tempfile.TemporaryDirectory(prefix=f".{self.path.name}.spool-", dir=self.path.parent)
        spool = Path(self._spool_dir.name)
        self._levels = [_LevelSpool(s, self.tile_size, spool / f"{k}.bin") for k, s in enumerate(self.level_sizes)]
        self._band: np.ndarray | None = None
        self._band_rows = 0
        self._cache: OrderedDict[int, tuple[np.ndarray, bytes]] = OrderedDict()
        self._user_keys: dict[Hashable, int] = {}
        self._parent_keys: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._keys_issued = 0
        self._closed = False

    @staticmethod
    def _check_geometry(size: Sequence[int], mpp: float, channels: int, tile_size: int) -> tuple[int, int]:
        if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s <= 0 for s in size):
            raise ValueError(f"PyramidalTiffWriter: size must be (width, height) > 0, got {tuple(size)!r}")
        if not math.isfinite(mpp) or mpp <= 0:
            raise ValueError(f"PyramidalTiffWriter: mpp must be > 0, got {mpp!r}")
        if channels not in (1, 3):
            raise ValueError(f"PyramidalTiffWriter: channels must be 1 (a map) or 3 (RGB), got {channels!r}")
        if tile_size <= 0 or tile_size % 16:
            raise ValueError(f"PyramidalTiffWriter: tile_size must be a positive multiple of 16, got {tile_size!r}")
        return int(size[0]), int(size[1])

    # ---------------------------------------------------------------- input
    def _as_hwc(self, pixels: np.ndarray, what: str) -> np.ndarray:
        pixels = np.asarray(pixels)
        if self.channels == 1 and pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.ndim != 3 or pixels.shape[2] != self.channels or pixels.dtype != np.uint8:
            expected = "(h, w) or (h, w, 1)" if self.channels == 1 else "(h, w, 3)"
            raise ValueError(f"PyramidalTiffWriter: {what} must be {expected} uint8, got {pixels.shape} {pixels.dtype}")
        return pixels

    def write_rows(self, rows: np.ndarray) -> None:
        """Append level-0 rows below those already written.

        Args:
            rows: ``(h, width, 3)`` (RGB) or ``(h, width)`` / ``(h, width, 1)`` (one channel) uint8, any ``h >= 0``.
        """
        self._check_open()
        rows = self._as_hwc(rows, "rows")
        width, height = self.size
        if rows.shape[1] != width:
            raise ValueError(f"PyramidalTiffWriter: rows must be {width} px wide, got {rows.shape[1]}")
        if self.rows_written + len(rows) > height:
            raise ValueError(f"PyramidalTiffWriter: {self.rows_written} + {len(rows)} rows exceed the height {height}")
        T, done = self.tile_size, 0
        while done < len(rows):
            if self._band is None:  # zeros: the padding of the right and bottom edge tiles, as tifffile pads them
                self._band = np.zeros((T, self._levels[0].columns * T, self.channels), np.uint8)
            n = min(T - self._band_rows, len(rows) - done)
            self._band[self._band_rows : self._band_rows + n, :width] = rows[done : done + n]
            self._band_rows += n
            self.rows_written += n
            done += n
            if self._band_rows == T or self.rows_written == height:
                band, self._band, self._band_rows = self._band, None, 0
                self._push_row(0, [(None, band[:, i * T : (i + 1) * T]) for i in range(self._levels[0].columns)])

    def write_tile_row(self, tiles: Sequence[np.ndarray], keys: Sequence[Hashable | None] | None = None) -> None:
        """Append one row of level-0 tiles (``tile_size`` rows, fewer for the last row of the image).

        Args:
            tiles: ``columns = ceil(width / tile_size)`` tiles, each ``(tile_size, tile_size, C)`` uint8 (``(T, T)``
                for one channel); what lies beyond the image's right or bottom edge is ignored.
            keys: optional hashable per tile (``None`` for a tile of its own): tiles with equal keys must have equal
                pixels; their encoding and reduced tiles are computed once. Edge tiles lose their key.
        """
        self._check_open()
        level, T = self._levels[0], self.tile_size
        if self._band_rows:
            raise ValueError(
                f"PyramidalTiffWriter: a tile row must start on a tile boundary, {self._band_rows} rows of "
                "a band are pending"
            )
        if level.rows_done == level.rows:
            raise ValueError("PyramidalTiffWriter: every row of tiles was written already")
        if len(tiles) != level.columns or (keys is not None and len(keys) != level.columns):
            raise ValueError(f"PyramidalTiffWriter: a tile row has {level.columns} tiles (and keys), got {len(tiles)}")
        width, height = self.size
        valid_h = min(T, height - level.rows_done * T)
        row = []
        for i, tile in enumerate(tiles):
            tile = self._as_hwc(tile, "a tile")
            if tile.shape[:2] != (T, T):
                raise ValueError(f"PyramidalTiffWriter: tiles must be {T} x {T} px, got {tile.shape[:2]}")
            key = None if keys is None else self._user_key(keys[i])
            valid_w = min(T, width - i * T)
            if (valid_h, valid_w) != (T, T):  # zero the part outside the image, as tifffile pads edge tiles
                tile, key = np.pad(tile[:valid_h, :valid_w], ((0, T - valid_h), (0, T - valid_w), (0, 0))), None
            row.append((key, tile))
        self.rows_written += valid_h
        self._push_row(0, row)

    # ---------------------------------------------------------------- levels
    def _new_key(self) -> int:
        self._keys_issued += 1
        return self._keys_issued

    def _user_key(self, key: Hashable | None) -> int | None:
        if key is None:
            return None
        if key not in self._user_keys:
            self._user_keys[key] = self._new_key()
        return self._user_keys[key]

    def _parent_key(self, level: int, children: list[int]) -> int:
        """The key of a reduced tile made from keyed children (a new one per combination; old combinations are
        forgotten first, which only costs recomputing them)."""
        combination = (level, *children)
        key = self._parent_keys.get(combination)
        if key is None:
            key = self._parent_keys[combination] = self._new_key()
            if len(self._parent_keys) > 64 * max(self.max_cached_tiles, 1):
                self._parent_keys.popitem(last=False)
        return key

    def _cached(self, key: int | None) -> tuple[np.ndarray, bytes] | None:
        entry = None if key is None else self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
        return entry

    def _remember(self, key: int, pixels: np.ndarray, data: bytes) -> None:
        self._cache[key] = (pixels, data)
        while len(self._cache) > self.max_cached_tiles:
            self._cache.popitem(last=False)

    def _push_row(self, index: int, row: list[tuple[int | None, np.ndarray]]) -> None:
        """Encode a row of tiles of level ``index`` and pass it, with its pair, on to the coarser level."""
        level = self._levels[index]
        self._encode_row(level, row)
        level.rows_done += 1
        if index + 1 == len(self._levels):
            return
        if level.pending is None and level.rows_done % 2 == 1 and level.rows_done < level.rows:
            level.pending = row  # an even row: its coarser row needs the next one too
            return
        upper, lower = (row, None) if level.pending is None else (level.pending, row)
        level.pending = None
        self._push_row(index + 1, self._parent_row(index, upper, lower))

    def _parent_row(
        self, index: int, upper: list[tuple[int | None, np.ndarray]], lower: list[tuple[int | None, np.ndarray]] | None
    ) -> list[tuple[int | None, np.ndarray]]:
        """The tile row of level ``index + 1`` made from tile rows ``upper`` and ``lower`` (None past the bottom)."""
        T, C = self.tile_size, self.channels
        child_w, child_h = self._levels[index].size
        parent = self._levels[index + 1]
        block_h = min(2 * T, child_h - 2 * T * parent.rows_done)
        row = []
        for i in range(parent.columns):
            block_w = min(2 * T, child_w - 2 * T * i)
            # (row, column) in the 2 x 2 block -> child tile; the block's right column or lower row may be missing
            children = {
                (oy, ox): r[c]
                for oy, r in enumerate((upper, lower))
                if r is not None
                for ox, c in enumerate((2 * i, 2 * i + 1))
                if c < len(r)
            }
            key = None
            if (block_h, block_w) == (2 * T, 2 * T) and all(k is not None for k, _ in children.values()):
                key = self._parent_key(index + 1, [k for k, _ in children.values()])
                cached = self._cached(key)
                if cached is not None:
                    row.append((key, cached[0]))
                    continue
            block = np.zeros((2 * T, 2 * T, C), np.uint8)
            for (oy, ox), (_, pixels) in children.items():
                block[oy * T : (oy + 1) * T, ox * T : (ox + 1) * T] = pixels
            small = _halve(block[:block_h, :block_w], self.resample)
            tile = np.zeros((T, T, C), np.uint8)
            tile[: small.shape[0], : small.shape[1]] = small
            row.append((key, tile))
        return row

    def _encode_row(self, level: _LevelSpool, row: list[tuple[int | None, np.ndarray]]) -> None:
        """Append the encoded tiles of ``row`` to ``level``'s spool; keyed tiles are encoded once."""
        todo: dict[Any, np.ndarray] = {}
        for i, (key, pixels) in enumerate(row):
            if self._cached(key) is None:
                todo.setdefault(("tile", i) if key is None else key, pixels)
        if self._pool is not None and len(todo) > 1:
            encoded = dict(zip(todo, self._pool.map(self._encoder, todo.values())))
        else:
            encoded = {name: self._encoder(pixels) for name, pixels in todo.items()}
        for i, (key, pixels) in enumerate(row):
            if key is None:
                data = encoded[("tile", i)]
            else:
                cached = self._cached(key)
                data = cached[1] if cached is not None else encoded[key]
                if cached is None:
                    self._remember(key, pixels, data)
            level.file.write(data)
            level.lengths.append(len(data))

    # ---------------------------------------------------------------- output
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"PyramidalTiffWriter({str(self.path)!r}) is closed")

    def close(self) -> list[tuple[int, int]]:
        """Assemble the TIFF from the spooled levels and remove the spools (idempotent).

        Returns:
            The ``(width, height)`` of each level written.

        Raises:
            ValueError: fewer rows were written than the image's height (nothing is written then).
        """
        if self._closed:
            return list(self.level_sizes)
        if self.rows_written != self.size[1]:
            self.abort()
            raise ValueError(
                f"PyramidalTiffWriter({str(self.path)!r}): {self.rows_written} of {self.size[1]} rows were written; "
                "no file was written"
            )
        try:
            self._assemble()
        finally:
            self.abort()
        return list(self.level_sizes)

    def _assemble(self) -> None:
        import tifffile

        tile_bytes = sum(sum(level.lengths) for level in self._levels)
        bigtiff = tile_bytes > _BIGTIFF_BYTES if self.bigtiff is None else bool(self.bigtiff)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
                for k, level in enumerate(self._levels):
                    width, height = level.size
                    px_per_cm = 1e4 / (self.mpp * 2**k)
                    tif.write(
                        level.tiles(),
                        shape=(height, width, 3) if self.channels == 3 else (height, width),
                        dtype=np.uint8,
                        tile=(self.tile_size, self.tile_size),
                        resolution=(px_per_cm, px_per_cm),
                        resolutionunit="CENTIMETER",
                        subfiletype=0 if k == 0 else 1,
                        metadata=None,
                        **self._encoder.write_kwargs,
                    )
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Stop without writing the file: close and remove the spools (idempotent)."""
        self._closed = True
        self._band = None
        for level in self._levels:
            level.pending = None
            level.file.close()
        self._cache.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._spool_dir.cleanup()

    def __enter__(self) -> PyramidalTiffWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_pyramidal_tiff_tiles(
    path: str | os.PathLike, size: Sequence[int], rows: Iterable[np.ndarray], mpp: float, **kwargs: Any
) -> list[tuple[int, int]]:
    """Write a pyramidal TIFF from an iterable of level-0 row bands, one band in memory at a time.

    Args:
        path: output ``.tif`` / ``.tiff``.
        size: level-0 ``(width, height)``.
        rows: bands of rows top to bottom, ``(h, width, 3)`` or ``(h, width)`` uint8, heights summing to ``height``
            (e.g. a generator reading or computing one band at a time).
        mpp: microns per pixel at level 0.
        kwargs: other :class:`PyramidalTiffWriter` arguments (``channels``, ``tile_size``, ``resample``,
            ``compression``, ...).

    Returns:
        The ``(width, height)`` of each level written.
    """
    with PyramidalTiffWriter(path, size, mpp, **kwargs) as writer:
        for band in rows:
            writer.write_rows(band)
    return writer.close()
