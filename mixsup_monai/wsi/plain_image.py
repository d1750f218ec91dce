"""Plain RGB images (PNG, JPEG, GIF, BMP, WebP) read as one-level slides, through MONAI's ``PILReader``.

Tiles exported from a viewer, MONAI Label regions and test crops are plain images: the tissue command and
tile inference read them whole (they are small). A large one is refused with the command that turns it into
a pyramid, because reading it needs the whole image in memory and no coarse level exists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mixsup_monai.utils.errors import InputError

__all__ = ["PLAIN_IMAGE_MAX_PIXELS", "PlainImage", "plain_image_format"]

#: plain images up to this many pixels are read whole (64 Mpx: 192 MB of RGB, e.g. 8192 x 8192).
PLAIN_IMAGE_MAX_PIXELS = 2**26
#: leading bytes of single-image formats that no slide reader opens (OpenSlide: "Unsupported or missing image file").
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF", b"BM": "BMP"}


def plain_image_format(path: str | os.PathLike) -> str | None:
    """``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"BMP"``, ``"WebP"`` when ``path`` is a single-image file (by its leading
    bytes, not its name), else ``None``."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:  # unreadable: the slide readers report it
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def _pyramid_hint(path: Path) -> str:
    return (
        f"convert it to a tiled pyramid, e.g. `vips tiffsave {path.name} {path.stem}.tif --tile --pyramid "
        "--compression jpeg`, or write one with mixsup_monai.wsi.write_pyramidal_tiff"
    )


class PlainImage:
    """A plain image held in memory, with OpenSlide's ``read_region`` conventions (outside pixels are black).

    Args:
        path: image file.
        max_pixels: refuse larger images (:class:`InputError` with the command that makes a pyramid); default
            :data:`PLAIN_IMAGE_MAX_PIXELS`.

    Raises:
        InputError: the image is larger than ``max_pixels`` or cannot be decoded.
    """

    def __init__(self, path: str | os.PathLike, max_pixels: int | None = None):
        from monai.data import PILReader
        from PIL import Image

        p = Path(path)
        max_pixels = PLAIN_IMAGE_MAX_PIXELS if max_pixels is None else int(max_pixels)
        kind = plain_image_format(p) or "image"
        try:
            with Image.open(p) as probe:  # the header only: the size is known before anything is decoded
                width, height = probe.size
        except Exception as e:  # PIL's own words for a damaged file
            raise InputError(f"plain {kind} image cannot be decoded", p, f"{type(e).__name__}: {e}") from e
        if width * height > max_pixels:
            raise InputError(
                f"plain {kind} image of {width} x {height} px is too large to read whole (above {max_pixels} px)",
                p,
                _pyramid_hint(p),
            )
        image = PILReader().read(str(p))
        try:
            self._pixels = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        except Exception as e:  # truncated data shows only when decoded
            raise InputError(f"plain {kind} image cannot be decoded", p, f"{type(e).__name__}: {e}") from e
        finally:
            image.close()
        self.format = kind

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self._pixels.shape[1]), int(self._pixels.shape[0])

    def read_region(self, location: Sequence[int], level: int, size: Sequence[int]) -> np.ndarray:
        """``(h, w, 3)`` uint8 region at ``location`` ``(x, y)`` of size ``(w, h)`` (``level`` must be 0)."""
        if level != 0:
            raise ValueError(f"a plain image has one level, got level {level}")
        (x, y), (w, h) = (int(location[0]), int(location[1])), (int(size[0]), int(size[1]))
        out = np.zeros((h, w, 3), np.uint8)
        W, H = self.dimensions
        xs, ys, xe, ye = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if xe > xs and ye > ys:
            out[ys - y : ye - y, xs - x : xe - x] = self._pixels[ys:ye, xs:xe]
        return out

    def close(self) -> None:
        """Forget the pixels."""
        self._pixels = np.zeros((0, 0, 3), np.uint8)
