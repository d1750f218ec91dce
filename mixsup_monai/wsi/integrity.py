"""Checks that a slide file is whole and decodes: TIFF header consistency, decodable levels, true colours.

Three failures that readers do not report clearly, each met on real files:

* a truncated file (an interrupted copy): its TIFF header still lists every tile, but some tiles (and the
  images after them) lie past the end of the file; cuCIM then opens one level and fails in the middle of a
  run ("Tile 39 data range ... exceeds file size"). :func:`tiff_header_problem` finds it from the headers
  alone -- every tile's offset + byte count against the file size, and the chain of images -- without
  decoding a pixel.
* a level whose tiles do not decode: cuCIM returns black for corrupt JPEG tiles (printing libjpeg errors),
  OpenSlide raises ("Dimensional mismatch reading JPEG" on some DICOM WSIs). :func:`level_problems` decodes a
  probe region per level and compares its colour with the finer level it was made from.
* wrong colours: JPEG tiles stored in RGB without an Adobe marker are decoded as YCbCr by cuCIM and
  OpenSlide (false colours, tissue detection finds nothing). :func:`colour_mismatch` compares a region with
  what tifffile, which honours the TIFF's photometric tag, decodes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "COLOUR_TOLERANCE",
    "TIFF_SUFFIXES",
    "colour_mismatch",
    "level_problems",
    "probe_box",
    "tiff_header_problem",
]

#: files whose headers are TIFF (checked by :func:`tiff_header_problem`).
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".qptiff")
#: largest difference of mean channel values (0-255) between two decodings of the same region that still
#: counts as the same picture: JPEG decoders differ by 1-3, a level made by area averaging by < 5; a
#: YCbCr/RGB mix-up shifts a channel by 40-130 and a black (undecoded) level by the image's brightness.
COLOUR_TOLERANCE = 20.0
#: edge of the probe region decoded per level, in pixels of that level.
PROBE_SIZE = 64


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_messages() -> Iterator[list[str]]:
    """The warnings and errors tifffile logs inside the block (collected, not printed)."""
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def tiff_header_problem(path: str | os.PathLike) -> str | None:
    """Why a TIFF file is incomplete, read from its headers only (no pixel is decoded); ``None`` when whole.

    Checks that tifffile parses the chain of images (IFDs) to its end, and that every tile / strip of every
    image lies inside the file. Files that are not TIFFs (by suffix) are not checked.

    Args:
        path: slide file.

    Returns:
        e.g. ``"tile 45 of image 0 ends at byte 1058674, past the end of the file (1047796 bytes): the file is
        truncated"``, or ``None``.
    """
    import tifffile

    p = Path(path)
    if p.suffix.lower() not in TIFF_SUFFIXES:
        return None
    size = p.stat().st_size
    try:
        with _tifffile_messages() as messages, tifffile.TiffFile(p) as tif:
            pages = list(tif.pages)
            for page in pages:
                if not hasattr(page, "dataoffsets"):  # a TiffFrame: its keyframe's geometry, own offsets
                    continue
                ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts, np.int64)
                beyond = np.flatnonzero(ends > size)
                if beyond.size:
                    kind = "tile" if page.is_tiled else "strip"
                    first = int(beyond[0])
                    return (
                        f"{kind} {first} of image {page.index} ends at byte {int(ends[first])}, past the end of "
                        f"the file ({size} bytes; {beyond.size} of its {len(ends)} {kind}s): the file is truncated"
                    )
    except tifffile.TiffFileError:  # the first bytes are no TIFF header at all
        return "its first bytes are not a TIFF header (a file of another kind under a TIFF name?)"
    except Exception as e:  # a header tifffile cannot parse: broken at its start
        return f"its TIFF header cannot be read ({type(e).__name__}: {e})"
    broken = [m for m in messages if "invalid" in m.lower() and "offset" in m.lower()]
    if broken:
        return (
            f"the chain of images stops after image {len(pages) - 1} ({broken[0]}; the file is {size} bytes): "
            "the file is truncated"
        )
    return None


def probe_box(level_dimensions: tuple[tuple[int, int], ...], downsamples: tuple[float, ...], level: int):
    """``(x, y, w, h)``: the level-0 box of the probe region of ``level`` -- at most :data:`PROBE_SIZE` px of that
    level, centred on the slide (where tissue usually is)."""
    (w0, h0), (lw, lh) = level_dimensions[0], level_dimensions[level]
    ds = downsamples[level]
    pw, ph = min(PROBE_SIZE, lw), min(PROBE_SIZE, lh)
    x = max(0, int((w0 - pw * ds) / 2))
    y = max(0, int((h0 - ph * ds) / 2))
    return x, y, pw, ph


def colour_mismatch(region: np.ndarray, reference: np.ndarray, tolerance: float = COLOUR_TOLERANCE) -> str | None:
    """How ``region`` differs in colour from ``reference`` (same content, maybe other sizes), or ``None``.

    Args:
        region: ``(h, w, 3)`` uint8 decoded by the reader under test.
        reference: ``(h', w', 3)`` uint8 of the same area, decoded by another decoder or from another level.
        tolerance: largest allowed difference of a channel's mean.
    """
    a = region.reshape(-1, 3).astype(np.float64).mean(0)
    b = reference.reshape(-1, 3).astype(np.float64).mean(0)
    if float(np.abs(a - b).max()) <= tolerance:
        return None
    return f"mean RGB {'/'.join(f'{v:.0f}' for v in a)} where the reference has {'/'.join(f'{v:.0f}' for v in b)}"


def level_problems(
    read: Callable[[int, int, int, int, int], np.ndarray],
    level_dimensions: tuple[tuple[int, int], ...],
    downsamples: tuple[float, ...],
) -> dict[int, str]:
    """The levels that do not decode, each with the reason: a probe per level, compared with a finer level.

    Every level's probe region (:func:`probe_box`) must decode; a level > 0 must also show the colours of the
    same area read from the nearest finer level that passed (scaled down by area averaging), so a level that
    decodes to black or to false colours is caught. Level 0 has no finer reference (see
    :func:`colour_mismatch` with a second decoder for that).

    Args:
        read: ``read(x, y, w, h, level)`` -> ``(h, w, 3)`` uint8, the backend's region read.
        level_dimensions: ``(width, height)`` per level.
        downsamples: level-0 pixels per pixel of each level.

    Returns:
        ``{level: reason}`` of the levels to skip (empty when every level decodes).
    """
    from PIL import Image

    problems: dict[int, str] = {}
    good: list[int] = []
    for level in range(len(level_dimensions)):
        x, y, w, h = probe_box(level_dimensions, downsamples, level)
        try:
            probe = read(x, y, w, h, level)
        except Exception as e:  # the backend's own decoding error
            problems[level] = f"decoding fails ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            continue
        if good:
            finer = good[-1]
            ratio = downsamples[level] / downsamples[finer]
            fw, fh = max(1, round(w * ratio)), max(1, round(h * ratio))
            reference = read(x, y, fw, fh, finer)
            reference = np.asarray(Image.fromarray(reference).resize((w, h), Image.Resampling.BOX))
            mismatch = colour_mismatch(probe, reference)
            if mismatch is not None:
                problems[level] = f"it decodes to other colours than level {finer} ({mismatch})"
                continue
        good.append(level)
    return problems
