"""Opening whole-slide images through MONAI's ``WSIReader`` with per-file cuCIM -> OpenSlide fallback."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from monai.utils import StrEnum, look_up_option, optional_import

from mixsup_monai.utils.errors import InputError, InputNotFoundError
from mixsup_monai.wsi.integrity import TIFF_SUFFIXES, colour_mismatch, level_problems, probe_box, tiff_header_problem
from mixsup_monai.wsi.plain_image import PlainImage, plain_image_format

__all__ = [
    "DEFAULT_BACKENDS",
    "Backend",
    "MppSource",
    "RegionsJob",
    "Slide",
    "SlideInfo",
    "open_slide",
    "cucim_incompatibility",
    "MPP_PLAUSIBLE_RANGE",
]

logger = logging.getLogger(__name__)

# cuFile, loaded with cuCIM's extension, writes ./cufile.log when it finds no GPU driver: reading a slide
# (e.g. while a bundle config is resolved) must not write into the working directory. A user's setting wins.
os.environ.setdefault("CUFILE_LOGFILE_PATH", os.devnull)

_openslide, _has_openslide = optional_import(
    "openslide", descriptor="Please install openslide-python and openslide-bin before reading slides with OpenSlide."
)

#: Level-0 microns per pixel outside this range are treated as wrong tags (scanners: ~0.1-2 um/px).
MPP_PLAUSIBLE_RANGE = (0.05, 50.0)

#: TIFF compressions that cuCIM 26.x decodes on CPU, checked here on tiled RGB TIFFs written with
#: tifffile, each read in a subprocess: none, LZW (with and without predictor), deflate without
#: predictor and Aperio JPEG 2000 RGB (33005) are pixel-exact, JPEG (RGB and YCbCr) within JPEG error;
#: Aperio JPEG 2000 YCbCr (33003) decodes (not pixel-checked). PackBits, zstd, WebP, PNG, JPEG XL,
#: LZMA, JPEG XR and generic JPEG 2000 (34712) raise "format ... is not supported yet" at the first read.
_CUCIM_COMPRESSIONS = {
    1: "none",
    5: "lzw",
    7: "jpeg",
    8: "adobe_deflate",
    32946: "deflate",
    33003: "jp2k",
    33005: "jp2k",
}
#: deflate + horizontal predictor SEGFAULTS cuCIM (``boxes.tiff``: "AdobeDeflate compression support
#: is not configured", then the process dies) -- no Python exception to catch, so it is never tried.
_DEFLATE = (8, 32946)
#: formats cuCIM may be asked to open at all; everything else (DICOM .dcm, .mrxs, .ndpi, .vms,
#: .scn, .bif ...) goes straight to OpenSlide.
_CUCIM_SUFFIXES = (".tif", ".tiff", ".svs")
#: cuCIM's native code (cuFile, on a machine without a GPU driver) prints "dlopen error libcuda.so.1 ... cuFile
#: initialization failed" to C-level stdout when cucim is imported and when the first CuImage opens; True once a
#: cuCIM open succeeded in this process, after which it prints nothing more.
_CUCIM_STARTED = False


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """A per-process pool of reading threads (a forked child gets its own: threads do not survive fork)."""
    key = (os.getpid(), workers)
    pool = _POOLS.get(key)
    if pool is None:
        for stale in [k for k in _POOLS if k[0] != key[0]]:
            del _POOLS[stale]
        pool = _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="slide-read")
    return pool


class RegionsJob:
    """Regions being read in the background by :meth:`Slide.read_regions` (``background=True``)."""

    def __init__(self, out: np.ndarray, futures: list):
        self.out = out
        self._futures = futures

    def done(self) -> bool:
        """Whether every region has been read."""
        return all(f.done() for f in self._futures)

    def result(self) -> np.ndarray:
        """Wait for the reads (re-raising their errors) and return the filled array."""
        for future in self._futures:
            future.result()
        return self.out


class Backend(StrEnum):
    """Slide reader backends, in MONAI ``WSIReader`` naming.

    ``tifffile`` is not MONAI's ``TiffFileWSIReader`` (which decodes a whole level per patch, 0.9 patches/s
    measured) but :class:`~mixsup_monai.wsi.tiff_tiles.TiffTileReader`, which decodes the tiles a region needs:
    the last fallback, for TIFFs the others cannot read or decode in false colours.
    """

    CUCIM = "cucim"
    OPENSLIDE = "openslide"
    TIFFFILE = "tifffile"
    #: plain PNG / JPEG / ... images, read whole (:class:`~mixsup_monai.wsi.plain_image.PlainImage`); chosen by
    #: the file's leading bytes, never tried on slides.
    PIL = "pil"


#: backend order of :func:`open_slide`, tried per file.
DEFAULT_BACKENDS = (Backend.CUCIM.value, Backend.OPENSLIDE.value, Backend.TIFFFILE.value)


class MppSource(StrEnum):
    """Where ``SlideInfo.mpp`` came from."""

    USER = "user"
    TAGS = "tags"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SlideInfo:
    """Geometry and resolution of an opened slide.

    Attributes:
        path: absolute path of the slide.
        backend: reader that opened it, ``"cucim"`` or ``"openslide"``.
        level_count: number of pyramid levels.
        level_dimensions: ``(width, height)`` of each level, like OpenSlide.
        level_downsamples: level-0 pixels per pixel of each level.
        mpp: level-0 microns per pixel, or ``None`` when unknown or when the tags were implausible.
        mpp_source: ``"user"`` (given to :func:`open_slide`), ``"tags"`` (file metadata) or ``"unknown"``.
        vendor: OpenSlide's vendor name (``"aperio"``, ``"generic-tiff"``, ...) when known.
        skipped_levels: ``(level, reason)`` of the levels that do not decode (black, false colours or a
            decoding error, see :func:`mixsup_monai.wsi.integrity.level_problems`); level choices avoid them.
    """

    path: str
    backend: str
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    mpp_source: str
    vendor: str | None
    skipped_levels: tuple[tuple[int, str], ...] = ()

    @property
    def usable_levels(self) -> tuple[int, ...]:
        """The levels that decode, finest first."""
        skipped = {level for level, _ in self.skipped_levels}
        return tuple(level for level in range(self.level_count) if level not in skipped)

    def to_dict(self) -> dict:
        """A JSON-serialisable copy (tuples become lists, ``skipped_levels`` a ``{level: reason}`` object)."""
        d = asdict(self)
        d["level_dimensions"] = [list(s) for s in self.level_dimensions]
        d["level_downsamples"] = list(self.level_downsamples)
        d["skipped_levels"] = {str(level): reason for level, reason in self.skipped_levels}
        return d


def _check_mpp(mpp: float, what: str) -> float:
    if isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not math.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"{what} must be a positive number of microns per pixel, got {mpp!r}")
    return float(mpp)


def cucim_incompatibility(path: str | os.PathLike) -> str | None:
    """Why cuCIM must not open ``path``, or ``None`` when it may.

    Reads TIFF headers only (tifffile, no pixel decoding). A file is refused when it is not a
    ``.tif``/``.tiff``/``.svs`` TIFF, or when any page uses a compression cuCIM cannot decode: decoding
    deflate with a predictor kills the process (segfault) instead of raising, so this check has to
    happen *before* cuCIM sees the file.

    Args:
        path: slide file.

    Returns:
        A human-readable reason, or ``None``.
    """
    import tifffile

    p = Path(path)
    if p.is_dir() or p.suffix.lower() not in _CUCIM_SUFFIXES:
        return f"cuCIM is only used for {'/'.join(_CUCIM_SUFFIXES)} files, got {p.name!r}"
    try:
        with tifffile.TiffFile(p) as tif:
            if tif.is_ndpi or tif.is_scn:
                return "Hamamatsu NDPI / Leica SCN TIFFs are read by OpenSlide"
            for index, page in enumerate(tif.pages):
                tags = page.tags
                compression = int(tags["Compression"].value) if "Compression" in tags else 1
                predictor = int(tags["Predictor"].value) if "Predictor" in tags else 1
                if compression not in _CUCIM_COMPRESSIONS:
                    return f"page {index} uses TIFF compression {compression}, which cuCIM cannot decode"
                if compression in _DEFLATE and predictor != 1:
                    return (
                        f"page {index} uses deflate with predictor {predictor}, which crashes cuCIM "
                        "(segmentation fault, no Python error)"
                    )
    except Exception as e:  # not a TIFF tifffile can parse: let OpenSlide decide
        return f"tifffile cannot parse the TIFF headers ({type(e).__name__}: {e})"
    return None


def _tiff_tag_mpp(path: str) -> float | None:
    """Level-0 MPP from the first page's resolution tags (unit centimetre or inch), else ``None``."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            if "XResolution" not in tags or "ResolutionUnit" not in tags:
                return None
            unit = int(tags["ResolutionUnit"].value)
            um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit)
            num, den = tags["XResolution"].value
            if um_per_unit is None or not num or not den:
                return None
            return um_per_unit * den / num
    except Exception:
        return None


def _aperio_mpp(path: str) -> float:
    """The ``MPP = ...`` field of an Aperio description (first page), or ``KeyError``."""
    import re

    import tifffile

    with tifffile.TiffFile(path) as tif:
        match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", tif.pages[0].description or "")
    if match is None:
        raise KeyError("MPP")
    return float(match.group(1))


def _tag_mpp(path: str, backend: str, wsi) -> float | None:
    """Level-0 MPP from the file's own metadata, as the backend exposes it (no plausibility check here).

    OpenSlide: ``openslide.mpp-x/y`` (Aperio ``MPP``, or the TIFF resolution tags for generic TIFF).
    cuCIM: the Aperio ``MPP`` field, else the TIFF resolution tags read with tifffile -- cuCIM's own
    ``spacing`` is 1.0 for Aperio SVS and is therefore not used.
    """
    values: list[float] = []
    if backend == Backend.PIL:
        return None  # a plain image's dpi is a screen setting, not the scanner's
    if backend == Backend.OPENSLIDE:
        for key in ("openslide.mpp-x", "openslide.mpp-y"):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                values.append(float(wsi.properties[key]))
    else:
        try:
            values.append(_aperio_mpp(path) if backend == Backend.TIFFFILE else float(wsi.metadata["aperio"]["MPP"]))
        except (KeyError, TypeError, ValueError):
            mpp = _tiff_tag_mpp(path)
            if mpp is not None:
                values.append(mpp)
    values = [v for v in values if math.isfinite(v) and v > 0]
    if not values:
        return None
    if max(values) > 1.05 * min(values):
        logger.warning("slide %r: anisotropic pixels in the tags (mpp x/y %s); using their mean", path, values)
    return float(np.mean(values))


def _vendor(path: str, backend: str, wsi) -> str | None:
    if backend == Backend.PIL:
        return None
    if backend == Backend.OPENSLIDE:
        return wsi.properties.get("openslide.vendor")
    if _has_openslide:
        try:
            return _openslide.OpenSlide.detect_format(path)
        except Exception:
            return None
    return "aperio" if "aperio" in getattr(wsi, "metadata", {}) else "generic-tiff"


class Slide:
    """An opened whole slide: geometry (:class:`SlideInfo`) and region reads, backend-independent.

    Create it with :func:`open_slide`. The slide is opened with MONAI's ``WSIReader`` (its
    ``CuCIMWSIReader`` / ``OpenSlideWSIReader``), whose backend object is kept for the reads: pixel
    reads call the backend object directly because MONAI's ``get_data`` adds ~0.2 ms of checks and
    metadata per patch (2070 vs 3425 patches/s measured with cuCIM here) and has no batched read.

    Conventions (OpenSlide / CLAM): ``location`` is ``(x, y)`` in level-0 pixels, ``size`` is
    ``(width, height)`` in pixels of the level read; arrays are ``(height, width, 3)`` uint8 RGB. Pixels
    outside the slide are black for both backends.

    Not picklable and not fork-safe: open slides in each DataLoader worker (see
    :class:`mixsup_monai.data.patch_dataset.WSIPatchDataset`).
    """

    def __init__(self, reader, wsi, info: SlideInfo):
        self._reader = reader
        self._wsi = wsi
        self.info = info
        self._pid = os.getpid()

    # ---------------------------------------------------------------- geometry
    def __repr__(self) -> str:
        i = self.info
        return (
            f"Slide({i.path!r}, backend={i.backend!r}, levels={i.level_count}, "
            f"size={i.level_dimensions[0]}, mpp={i.mpp} ({i.mpp_source}))"
        )

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.info.level_dimensions[0]

    @property
    def backend_object(self):
        """The backend's slide object (``cucim.CuImage`` or ``openslide.OpenSlide``)."""
        return self._wsi

    def _check_level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise TypeError(f"slide {self.info.path!r}: level must be an int, got {level!r}")
        if not 0 <= level < self.info.level_count:
            raise ValueError(
                f"slide {self.info.path!r}: level {level} does not exist, expected 0..{self.info.level_count - 1}"
            )
        reason = dict(self.info.skipped_levels).get(int(level))
        if reason is not None:
            raise InputError(
                f"level {level} of the slide does not decode",
                self.info.path,
                f"{reason}; read one of the levels that do ({list(self.info.usable_levels)}) or export the slide again",
            )
        return int(level)

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel at ``level`` (``None`` when the slide's MPP is unknown)."""
        level = self._check_level(level)
        return None if self.info.mpp is None else self.info.mpp * self.info.level_downsamples[level]

    def level_for_downsample(self, downsample: float, rtol: float = 0.01) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (within ``rtol``).

        Like OpenSlide's ``get_best_level_for_downsample``: never coarser than asked, so that reading at
        that level and resizing down loses nothing. Levels that do not decode (``info.skipped_levels``) are
        never chosen.

        Args:
            downsample: wanted level-0 pixels per pixel (>= 1 to be meaningful; smaller gives level 0).
            rtol: relative tolerance, so that a level at 4.01 counts as 4.
        """
        if not math.isfinite(downsample) or downsample <= 0:
            raise ValueError(f"slide {self.info.path!r}: downsample must be > 0, got {downsample!r}")
        usable = self.info.usable_levels
        best = usable[0]  # when even the finest usable level is coarser than asked, it is the best there is
        for level in usable:
            ds = self.info.level_downsamples[level]
            if ds <= downsample * (1 + rtol) and ds >= self.info.level_downsamples[best]:
                best = level
        return best

    def level_for_mpp(self, mpp: float, rtol: float = 0.01) -> int:
        """The coarsest level whose resolution is at least as fine as ``mpp`` microns per pixel.

        Raises:
            ValueError: when the slide's MPP is unknown (pass ``mpp=`` to :func:`open_slide`).
        """
        mpp = _check_mpp(mpp, f"slide {self.info.path!r}: target mpp")
        if self.info.mpp is None:
            raise ValueError(
                f"slide {self.info.path!r}: cannot choose a level for {mpp} um/px because the slide's MPP is "
                "unknown (missing or implausible tags); pass the scanner's level-0 MPP, "
                "e.g. open_slide(path, mpp=0.5), or choose the level directly with level="
            )
        return self.level_for_downsample(mpp / self.info.mpp, rtol=rtol)

    # ---------------------------------------------------------------- reads
    def _check_size(self, size: Sequence[int], what: str = "size") -> tuple[int, int]:
        if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
            raise ValueError(f"slide {self.info.path!r}: {what} must be (width, height) > 0, got {tuple(size)!r}")
        return int(size[0]), int(size[1])

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        if self.info.backend == Backend.CUCIM:
            out = np.asarray(self._wsi.read_region((int(x), int(y)), (w, h), level))
        else:
            out = np.asarray(self._wsi.read_region((int(x), int(y)), level, (w, h)))
        if out.shape[-1] == 4:  # OpenSlide (and cuCIM's slow path for stripped TIFFs) return RGBA
            out = np.ascontiguousarray(out[..., :3])
        return out

    def read_region(self, location: Sequence[int] = (0, 0), size: Sequence[int] = (256, 256), level: int = 0):
        """Read one region.

        Args:
            location: ``(x, y)`` top-left corner in level-0 pixels.
            size: ``(width, height)`` in pixels of ``level``.
            level: pyramid level.

        Returns:
            ``(height, width, 3)`` uint8 RGB array.
        """
        level = self._check_level(level)
        w, h = self._check_size(size)
        return self._read(int(location[0]), int(location[1]), w, h, level)

    def _regions_out(
        self,
        n: int,
        size: tuple[int, int],
        out: np.ndarray | None,
        out_index: Sequence[int] | None,
        channels_first: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(out, index)`` for :meth:`read_regions`: the checked (or new) output array and each region's row in it."""
        w, h = size
        shape = (3, h, w) if channels_first else (h, w, 3)
        if out is None:
            out = np.empty((n, *shape), np.uint8)
        if out.dtype != np.uint8 or out.shape[1:] != shape:
            raise ValueError(f"slide {self.info.path!r}: out must be uint8 (M, {shape}), got {out.dtype} {out.shape}")
        index = np.arange(n) if out_index is None else np.asarray(out_index, dtype=np.int64)
        if len(index) != n:
            raise ValueError(f"slide {self.info.path!r}: out_index has {len(index)} entries for {n} locations")
        return out, index

    def _read_cucim_batch(self, locs: np.ndarray, size: tuple[int, int], level: int, num_workers: int) -> np.ndarray:
        """``(N, h, w, 3)`` regions read by one multi-location cuCIM ``read_region`` call."""
        # cuCIM wants a Python list here: numpy int64 arrays are refused ("Expected int64 array-like").
        n = len(locs)
        batches = self._wsi.read_region(locs.tolist(), size, level, num_workers=max(1, num_workers), batch_size=n)
        return np.asarray(next(iter(batches)))[..., :3]

    def read_regions(
        self,
        locations: Sequence[Sequence[int]] | np.ndarray,
        size: Sequence[int],
        level: int = 0,
        num_workers: int | None = None,
        method: str = "threads",
        out: np.ndarray | None = None,
        out_index: Sequence[int] | None = None,
        channels_first: bool = False,
        background: bool = False,
    ) -> np.ndarray | RegionsJob:
        """Read many same-size regions in one call, decoding in parallel.

        ``method="threads"`` (default): ``num_workers`` Python threads each read their share of the
        regions with the backend's single-region read, which releases the GIL (cuCIM and OpenSlide), and
        copy them straight into ``out``. ``method="cucim_batch"``: one multi-location
        ``CuImage.read_region(locations, size, level, num_workers=..., batch_size=N)`` call (cuCIM only;
        MONAI's ``WSIReader`` has no batched read). Threads are the default because a cuCIM batch call
        starts and joins its own thread pool every time: per 64-patch batch that gave ~2550 patches/s
        here (1.1-1.5 cores busy) against ~4400 patches/s (1.9 cores) for two threads of single reads,
        as fast as cuCIM's own streaming generator over all locations (~4100-4700).

        Args:
            locations: ``(N, 2)`` level-0 ``(x, y)`` top-left corners.
            size: ``(width, height)`` in pixels of ``level``, shared by all regions.
            level: pyramid level.
            num_workers: decoding threads (default ``min(2, cpu count)``; 0 or 1 reads in this thread).
            method: ``"threads"`` or ``"cucim_batch"``.
            out: optional uint8 array to write into, ``(M, h, w, 3)`` (or ``(M, 3, h, w)`` with
                ``channels_first``); by default a new ``(N, h, w, 3)`` array.
            out_index: position in ``out`` of each region (default ``0..N-1``).
            channels_first: write ``(3, h, w)`` regions into ``out`` (the transpose happens in the
                reading threads).
            background: return at once a :class:`RegionsJob` whose ``result()`` waits for the reads and
                returns ``out`` (``method="threads"`` only). Jobs queue on the same threads, so a job submitted
                while another runs starts the moment a thread is free: batches are read back to back.

        Returns:
            ``out`` (by default ``(N, height, width, 3)`` uint8 RGB), or a :class:`RegionsJob` with ``background``.
        """
        level = self._check_level(level)
        w, h = self._check_size(size)
        method = look_up_option(method, ("threads", "cucim_batch"))
        locs = np.asarray(locations, dtype=np.int64).reshape(-1, 2)
        n = len(locs)
        out, index = self._regions_out(n, (w, h), out, out_index, channels_first)
        if n == 0:
            return RegionsJob(out, []) if background else out
        if num_workers is None:
            num_workers = min(2, os.cpu_count() or 1)
        if background and method != "threads":
            raise ValueError(f"slide {self.info.path!r}: background reads need method='threads', got {method!r}")

        def store(i: int, rgb: np.ndarray) -> None:
            np.copyto(out[index[i]], rgb.transpose(2, 0, 1) if channels_first else rgb)

        if method == "cucim_batch" and self.info.backend == Backend.CUCIM and n > 1:
            batch = self._read_cucim_batch(locs, (w, h), level, num_workers)
            for i in range(n):
                store(i, batch[i])
            return out

        counter = itertools.count()  # next() on it is atomic under the GIL: threads pull work dynamically

        def work() -> None:
            for i in iter(counter.__next__, n):
                if i >= n:
                    break
                store(i, self._read(locs[i, 0], locs[i, 1], w, h, level))

        threads = min(max(1, num_workers), n)
        if threads == 1 and not background:
            work()
            return out
        job = RegionsJob(out, [_thread_pool(max(1, num_workers)).submit(work) for _ in range(threads)])
        return job if background else job.result()

    def read_scaled(
        self,
        location: Sequence[int] = (0, 0),
        size: Sequence[int] | None = None,
        out_size: Sequence[int] = (256, 256),
        max_read_pixels: int | None = 2**30,
    ) -> np.ndarray:
        """Read a level-0 box and resize it to ``out_size`` (e.g. a 4000 px LSR block to 240 px).

        Reads at the coarsest level whose pixels are still at least as many as ``out_size`` needs,
        then resizes with area averaging (PIL ``BOX``; bilinear when enlarging).

        Args:
            location: ``(x, y)`` top-left corner in level-0 pixels.
            size: ``(width, height)`` of the box in level-0 pixels (default: the whole slide).
            out_size: ``(width, height)`` of the output.
            max_read_pixels: refuse (``ValueError``) when the read at the chosen level would decode more
                pixels than this, instead of loading gigapixels; ``None`` disables the check.

        Returns:
            ``(out_height, out_width, 3)`` uint8 RGB array.
        """
        from PIL import Image

        if size is None:
            size = self.dimensions
        w0, h0 = self._check_size(size)
        ow, oh = self._check_size(out_size, "out_size")
        level = self.level_for_downsample(min(w0 / ow, h0 / oh))
        ds = self.info.level_downsamples[level]
        x, y = int(location[0]), int(location[1])
        lw, lh = max(1, round(w0 / ds)), max(1, round(h0 / ds))
        # a box that ends inside the slide must not read past the level's (floored) edge
        (W0, H0), (Lw, Lh) = self.dimensions, self.info.level_dimensions[level]
        if x >= 0 and x + w0 <= W0:
            lw = max(1, min(lw, Lw - int(x // ds)))
        if y >= 0 and y + h0 <= H0:
            lh = max(1, min(lh, Lh - int(y // ds)))
        if max_read_pixels is not None and lw * lh > max_read_pixels:
            raise ValueError(
                f"slide {self.info.path!r}: a {w0} x {h0} px level-0 box scaled to {ow} x {oh} needs "
                f"{lw} x {lh} = {lw * lh} px read at level {level} (the coarsest level fine enough; levels "
                f"{list(self.info.level_dimensions)}), above max_read_pixels={max_read_pixels}. "
                "Convert the slide to a pyramidal TIFF (e.g. `vips tiffsave in out.tif --tile --pyramid "
                "--compression jpeg`) or raise max_read_pixels."
            )
        region = self._read(x, y, lw, lh, level)
        if (lw, lh) == (ow, oh):
            return region
        resample = Image.Resampling.BOX if lw >= ow and lh >= oh else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(region).resize((ow, oh), resample=resample))

    def read_level(self, level: int, max_pixels: int = 2**26) -> np.ndarray:
        """Read a whole level.

        Args:
            level: pyramid level.
            max_pixels: refuse levels with more pixels than this (default 64 Mpx, 192 MB).

        Returns:
            ``(height, width, 3)`` uint8 RGB array.
        """
        level = self._check_level(level)
        w, h = self.info.level_dimensions[level]
        if w * h > max_pixels:
            raise ValueError(
                f"slide {self.info.path!r}: level {level} is {w} x {h} = {w * h} px, above max_pixels={max_pixels}; "
                "read a coarser level, use read_scaled, or raise max_pixels"
            )
        return self._read(0, 0, w, h, level)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release the backend's file handle (idempotent)."""
        if self._wsi is not None:
            close = getattr(self._wsi, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as e:  # closing must not mask the real error of a with-block
                    logger.debug("closing %r failed: %s", self.info.path, e)
            self._wsi = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError(
            f"Slide({self.info.path!r}) cannot be pickled: reader handles do not survive pickling; "
            "pass the path and open the slide in the worker (open_slide or WSIPatchDataset)"
        )


def _flush_c_stdout() -> None:
    """Flush the C library's stdio buffers (native code may buffer its ``printf`` output when stdout is a pipe)."""
    import ctypes

    # no C runtime reachable this way (e.g. Windows): nothing to flush
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _native_stdout_to_stderr():
    """Inside the block, what native code writes to file descriptor 1 goes to descriptor 2 (stderr).

    C-level writes bypass Python's ``sys.stdout``, so the descriptor itself is swapped (``os.dup2``) and
    restored afterwards: the JSON the command line prints stays alone on stdout. Python text written to
    ``sys.stdout`` meanwhile stays in its buffer and reaches the real stdout after the block.
    """
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # fd 1 closed or no sys.stdout: nothing to keep clean
        yield
        return
    try:
        os.dup2(2, 1)
    except OSError:  # no fd 2 to send it to: leave stdout as it is
        os.close(saved)
        yield
        return
    try:
        yield
    finally:
        _flush_c_stdout()
        os.dup2(saved, 1)
        os.close(saved)


def _open_with(path: str, backend: str):
    """Open ``path`` with one backend and decode one pixel; return ``(reader, wsi)`` (``reader`` is the MONAI
    ``WSIReader``, ``None`` for the tifffile and plain-image readers) or raise."""
    global _CUCIM_STARTED

    if backend == Backend.PIL:
        return None, PlainImage(path)
    if backend == Backend.TIFFFILE:
        if Path(path).suffix.lower() not in TIFF_SUFFIXES:
            raise RuntimeError(f"the tifffile reader reads {'/'.join(TIFF_SUFFIXES)} files only")
        from mixsup_monai.wsi.tiff_tiles import TiffTileReader

        wsi = TiffTileReader(path)
        wsi.read_region((0, 0), wsi.level_count - 1, (1, 1))
        return None, wsi
    if backend == Backend.CUCIM:
        reason = cucim_incompatibility(path)
        if reason is not None:
            raise RuntimeError(reason)
        if _CUCIM_STARTED:
            return _open_and_probe(path, backend)
        with _native_stdout_to_stderr():  # the import of cucim and its first open print cuFile noise
            if not optional_import("cucim", name="CuImage")[1]:
                raise RuntimeError("cucim is not installed (pip install --no-deps cucim-cu12 on CPU machines)")
            opened = _open_and_probe(path, backend)
        _CUCIM_STARTED = True
        return opened
    if not _has_openslide:
        raise RuntimeError("openslide-python (+ openslide-bin) is not installed")
    return _open_and_probe(path, backend)


def _open_and_probe(path: str, backend: str):
    """``(reader, wsi)`` of ``path`` opened by the MONAI ``WSIReader`` of ``backend``, one pixel decoded."""
    from monai.data import WSIReader

    reader = WSIReader(backend=backend, channel_dim=-1)
    wsi = reader.read(path)
    count = reader.get_level_count(wsi)
    if count < 1:
        raise RuntimeError("no pyramid level found")
    last = count - 1
    # Probe: decode one pixel of the coarsest level so that unsupported encodings fail here, at open.
    if backend == Backend.CUCIM:
        np.asarray(wsi.read_region((0, 0), (1, 1), last))
    else:
        wsi.read_region((0, 0), last, (1, 1))
    return reader, wsi


def _check_slide_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it may be a slide file, else raise :class:`InputError`."""
    p = Path(path)
    where = os.path.abspath(path)
    if not p.exists():
        if p.is_symlink():
            raise InputNotFoundError(
                "slide is a broken or looping symbolic link", where, "point the link at an existing slide file"
            )
        raise InputNotFoundError(
            "slide not found", where, "this path does not exist; check its spelling and the current folder"
        )
    if p.is_dir():
        raise InputError(
            "slide is a folder",
            where,
            "expected a slide file (.svs, .tif, .ndpi, .mrxs, ...); for a DICOM WSI give one of its .dcm files",
        )
    try:  # opened, not os.access(): what counts is whether this process may read it
        with open(p, "rb"):
            pass
    except PermissionError as e:
        raise InputError(
            "slide is not readable", where, "no read permission for this user; `chmod a+r` it or ask its owner"
        ) from e
    if p.stat().st_size == 0:
        raise InputError("slide file is empty (0 bytes)", where, "copy the slide again from its source")
    damage = tiff_header_problem(p)
    if damage is not None:
        raise InputError("slide file is damaged", where, f"{damage}; copy the slide again from its source")
    return p


def _user_mpp(path: str, mpp: float | None, magnification: float | None) -> float | None:
    """The level-0 MPP given to :func:`open_slide` (``mpp``, or ``10 / magnification``), checked; else ``None``."""
    if mpp is not None and magnification is not None:
        raise ValueError(f"slide {path!r}: give mpp or magnification, not both (got {mpp!r} and {magnification!r})")
    if mpp is not None:
        return _check_mpp(mpp, f"slide {path!r}: mpp")
    if magnification is not None:
        return 10.0 / _check_mpp(magnification, f"slide {path!r}: magnification")
    return None


def _slide_mpp(path: str, backend: str, wsi, user_mpp: float | None) -> tuple[float | None, MppSource]:
    """``(mpp, source)``: the user's MPP, else the tags' when plausible (a warning when not), else unknown."""
    if user_mpp is not None:
        return user_mpp, MppSource.USER
    slide_mpp = _tag_mpp(path, backend, wsi)
    lo, hi = MPP_PLAUSIBLE_RANGE
    if slide_mpp is not None and not lo <= slide_mpp <= hi:
        logger.warning(
            "slide %r: its tags claim %.4g um/px, outside the plausible %s-%s um/px; the MPP is treated as "
            "unknown -- pass open_slide(path, mpp=...) with the scanner's value",
            path,
            slide_mpp,
            lo,
            hi,
        )
        slide_mpp = None
    return slide_mpp, (MppSource.UNKNOWN if slide_mpp is None else MppSource.TAGS)


def _slide_info(path: str, backend: str, reader, wsi, user_mpp: float | None) -> SlideInfo:
    """Geometry, MPP and vendor of a slide opened by ``reader`` (a MONAI ``WSIReader``, or ``None`` for the
    tifffile / plain-image readers, which expose the geometry themselves) as ``wsi``."""
    if reader is None:
        dims = tuple(wsi.level_dimensions) if backend == Backend.TIFFFILE else (wsi.dimensions,)
        downsamples = tuple(wsi.level_downsamples) if backend == Backend.TIFFFILE else (1.0,)
    else:
        count = reader.get_level_count(wsi)
        sizes = [reader.get_size(wsi, level) for level in range(count)]
        dims = tuple((int(w), int(h)) for h, w in sizes)
        downsamples = tuple(float(reader.get_downsample_ratio(wsi, level)) for level in range(count))
    slide_mpp, source = _slide_mpp(path, backend, wsi, user_mpp)
    return SlideInfo(
        path=path,
        backend=backend,
        level_count=len(dims),
        level_dimensions=dims,
        level_downsamples=downsamples,
        mpp=slide_mpp,
        mpp_source=source.value,
        vendor=_vendor(path, backend, wsi),
    )


#: ``(path, size, mtime, backend) -> (why the backend must not read the file or None, skipped levels)``:
#: the decoding checks of :func:`_decoding_verdict` run once per file version and process.
_VERDICTS: dict[tuple, tuple[str | None, tuple[tuple[int, str], ...]]] = {}
#: fallbacks already reported by :func:`open_slide` (a slide is opened by every worker and dataset: say it once).
_FALLBACKS_SAID: set[tuple] = set()


def _reference_mismatch(path: str, slide: Slide, level: int) -> str | None:
    """How ``slide``'s colours at ``level`` differ from tifffile's decoding of the same probe, or ``None`` (also
    when tifffile cannot decode the file: then there is no second opinion)."""
    from mixsup_monai.wsi.tiff_tiles import TiffTileReader

    info = slide.info
    try:
        reference_reader = TiffTileReader(path)
    except Exception as e:  # not an RGB pyramid tifffile reads: no reference to compare with
        logger.debug("slide %r: no tifffile reference decoding (%s)", path, e)
        return None
    try:
        if reference_reader.level_dimensions[: level + 1] != info.level_dimensions[: level + 1]:
            return None  # the backends see other pyramids: nothing to compare region for region
        x, y, w, h = probe_box(info.level_dimensions, info.level_downsamples, level)
        reference = reference_reader.read_region((x, y), level, (w, h))
    except Exception as e:  # a tile tifffile cannot decode: no reference
        logger.debug("slide %r: no tifffile reference decoding (%s)", path, e)
        return None
    finally:
        reference_reader.close()
    return colour_mismatch(slide._read(x, y, w, h, level), reference)


def _decoding_verdict(path: str, slide: Slide) -> tuple[str | None, tuple[tuple[int, str], ...]]:
    """``(reason to reject the backend or None, skipped levels)`` for a slide just opened (cached per file version).

    Levels are checked with :func:`~mixsup_monai.wsi.integrity.level_problems`; on TIFFs, the finest level that
    decodes is compared with tifffile's decoding (which honours the photometric tag), except for the tifffile
    reader itself and for plain images.
    """
    info = slide.info
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns, info.backend)
    if key in _VERDICTS:
        return _VERDICTS[key]
    skipped = level_problems(slide._read, info.level_dimensions, info.level_downsamples)
    reject = None
    if len(skipped) == info.level_count:
        reject = "no level decodes (" + "; ".join(f"level {lv}: {why}" for lv, why in skipped.items()) + ")"
    elif info.backend in (Backend.CUCIM, Backend.OPENSLIDE) and Path(path).suffix.lower() in TIFF_SUFFIXES:
        finest = min(set(range(info.level_count)) - set(skipped))
        mismatch = _reference_mismatch(path, slide, finest)
        if mismatch is not None:
            reject = f"it decodes other colours than tifffile at level {finest} ({mismatch})"
    verdict = (reject, tuple(sorted(skipped.items())))
    _VERDICTS[key] = verdict
    if reject is None and skipped:
        logger.warning(
            "slide %r: %s", path, "; ".join(f"level {lv} is skipped, {why}" for lv, why in sorted(skipped.items()))
        )
    return verdict


def _open_checked(path: str, backend: str, user_mpp: float | None) -> Slide:
    """The slide opened by ``backend`` with its decoding checked; raise when that backend must not read it."""
    from dataclasses import replace

    reader, wsi = _open_with(path, backend)
    slide = Slide(reader, wsi, _slide_info(path, backend, reader, wsi, user_mpp))
    # cuCIM's libjpeg prints its errors about undecodable tiles ("ERROR in line 183 while reading JPEG header")
    # to C-level stdout: the probes of a damaged level must not spoil the JSON of the command line
    quiet = _native_stdout_to_stderr() if backend == Backend.CUCIM else contextlib.nullcontext()
    try:
        with quiet:
            reject, skipped = _decoding_verdict(path, slide)
    except Exception:
        slide.close()
        raise
    if reject is not None:
        slide.close()
        raise RuntimeError(reject)
    slide.info = replace(slide.info, skipped_levels=skipped)
    return slide


def open_slide(
    path: str | os.PathLike,
    mpp: float | None = None,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    magnification: float | None = None,
) -> Slide:
    """Open a whole-slide image with the first backend that reads it correctly.

    Before any backend, the file is checked: it exists, is a readable file, not empty, and (TIFFs) its headers
    are consistent -- every tile inside the file (:func:`~mixsup_monai.wsi.integrity.tiff_header_problem`), so
    a truncated copy is named here rather than failing mid-run. Plain PNG / JPEG / GIF / BMP / WebP images up
    to :data:`~mixsup_monai.wsi.plain_image.PLAIN_IMAGE_MAX_PIXELS` are read whole as one-level slides
    (backend ``"pil"``); larger ones are refused with the command that makes a pyramid.

    Backends are tried in order, per file. cuCIM is skipped without being called for files it cannot
    decode (see :func:`cucim_incompatibility`: deflate + predictor crashes it) and for non-TIFF formats.
    A backend that opens the file must also decode it: a probe region per level is decoded and compared
    with the finer level (a level that decodes to black or false colours is skipped with a warning, see
    ``SlideInfo.skipped_levels``), and on TIFFs the finest level is compared with tifffile's decoding; a
    backend whose colours differ (JPEG tiles in RGB without an Adobe marker, read as YCbCr by cuCIM and
    OpenSlide) is passed over for the next, with one warning. These checks run once per file and process.

    MPP, best source first: ``mpp`` (or ``magnification``, as ``10 / magnification`` um/px) given here >
    the file's tags (Aperio ``MPP`` / ``openslide.mpp-x`` / TIFF resolution in cm or inch) > unknown.
    Tag values outside :data:`MPP_PLAUSIBLE_RANGE` are rejected with a logged warning (e.g. a TIFF
    written with 72 dpi defaults claims ~350-900 um/px), leaving ``mpp=None, mpp_source="unknown"``.

    Args:
        path: slide file (a DICOM WSI: one of its ``.dcm`` files).
        mpp: level-0 microns per pixel, overriding the tags.
        backends: reader order, from ``"cucim"``, ``"openslide"``, ``"tifffile"``.
        magnification: objective power (20 for "20x"), converted to ``mpp = 10 / magnification``.

    Returns:
        The opened :class:`Slide`; use it as a context manager or call ``close()``.

    Raises:
        InputNotFoundError: ``path`` does not exist (a ``FileNotFoundError``).
        InputError: ``path`` is a folder, unreadable, empty, a truncated TIFF, or a plain image too large to
            read whole; or no backend reads it (the message names each backend's failure). A ``ValueError``.
        ValueError: bad arguments.
    """
    p = _check_slide_path(path)
    path_s = str(p.resolve())
    user_mpp = _user_mpp(path_s, mpp, magnification)
    if isinstance(backends, str):
        backends = (backends,)
    names = [look_up_option(b, Backend).value for b in backends]
    if not names:
        raise ValueError(f"slide {path_s!r}: backends must name at least one of {[b.value for b in Backend]}")
    if plain_image_format(p) is not None:
        names = [Backend.PIL.value]  # by its leading bytes: no slide reader opens a plain image

    failures = []
    for backend in names:
        try:
            slide = _open_checked(path_s, backend, user_mpp)
        except InputError:
            raise
        except Exception as e:  # every reader failure is collected and reported together
            failures.append(f"{backend}: {type(e).__name__}: {e}")
            logger.debug("slide %r: %s cannot open it: %s", path_s, backend, e)
            continue
        if failures:
            said = (path_s, backend, tuple(failures)) in _FALLBACKS_SAID
            wrong_colours = any("colours" in f for f in failures)
            level = logging.DEBUG if said else logging.WARNING if wrong_colours else logging.INFO
            logger.log(level, "slide %r opened with %s after: %s", path_s, backend, "; ".join(failures))
            _FALLBACKS_SAID.add((path_s, backend, tuple(failures)))
        return slide
    raise InputError(
        "no reader can open the slide",
        path_s,
        "; ".join(failures) + " -- check that it is a whole-slide image (SVS, TIFF, NDPI, MRXS, DICOM, ...)",
    )
