"""Command-line interface (``python -m mixsup_monai <command>``): thin wrappers over library functions.

A command that fails prints one line to stderr, ``error: <what> (<file / slide / key>): <expected / fix>``, and
exits 1; ``--debug`` (anywhere on the command line) or ``MIXSUP_MONAI_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "COMMANDS",
    "check_datalist",
    "demo_data",
    "error_line",
    "geojson",
    "lsr_stats",
    "main",
    "slide_info",
    "tissue",
    "zoo_package",
]

_DATALIST_DOC = "see README: datalist"


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def demo_data(task: str, out: str, seed: int = 0, slides: int | None = None) -> None:
    """Write a deterministic demo cohort with known pixel truth and print its datalist path.

    Args:
        task: ``mixsup``, ``lsr`` or ``npl``.
        out: output folder (created).
        seed: random seed; the same seed gives the same cohort.
        slides: number of slides (default: the task's default size).
    """
    from mixsup_monai.demo.cohorts import make_demo_cohort

    print(make_demo_cohort(task, out, seed=seed, n_slides=slides))


def check_datalist(path: str, task: str | None = None, no_open: bool = False) -> None:
    """Validate a datalist against the contract; print every problem and exit 1 if there is one.

    Args:
        path: datalist JSON file.
        task: the task it must describe (``mixsup``, ``lsr``, ``npl``); default: any.
        no_open: skip opening slides (syntax and file checks only).
    """
    from mixsup_monai.data.datalist import check_datalist as _check
    from mixsup_monai.utils.errors import InputError

    problems = _check(path, task=task, open_slides=not no_open)
    if problems:
        print(f"{path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        raise InputError(
            f"datalist has {len(problems)} problem(s)",
            Path(path).expanduser().resolve(),
            f"fix the ones listed above ({_DATALIST_DOC})",
        )
    print(f"{path}: OK")


def slide_info(slide: str, mpp: float | None = None) -> None:
    """Print a slide's reader backend, levels, sizes, downsamples and MPP (with its source) as JSON.

    Args:
        slide: slide file.
        mpp: level-0 microns per pixel to use instead of the file's tags.
    """
    from mixsup_monai.wsi.reader import open_slide

    with open_slide(slide, mpp=mpp) as wsi:
        _print_json(wsi.info.to_dict())


def tissue(
    slide: str,
    out: str | None = None,
    patch_size: int = 256,
    level: int | None = None,
    mpp: float | None = None,
    overlap: int = 0,
    min_tissue_fraction: float = 0.5,
    slide_mpp: float | None = None,
    tissue_mask: str | None = None,
) -> None:
    """Detect tissue, lay a patch grid, print one JSON object and optionally save an overlay PNG.

    Args:
        slide: slide file.
        out: overlay PNG path (thumbnail, tissue contour and patch boxes).
        patch_size: patch edge in pixels at the patch level.
        level: pyramid level of the patches (default: level 0, or the level matching ``mpp``).
        mpp: target microns per pixel of the patches (chooses the level).
        overlap: overlap between neighbouring patches in pixels.
        min_tissue_fraction: minimum tissue fraction for a patch to be kept.
        slide_mpp: level-0 MPP override for slides whose tags are missing or wrong.
        tissue_mask: a user-supplied tissue mask image instead of the automatic detection.
    """
    from mixsup_monai.wsi.grid import build_patch_grid
    from mixsup_monai.wsi.reader import open_slide
    from mixsup_monai.wsi.tissue import detect_tissue, save_tissue_overlay

    _check_grid_args(slide, patch_size, overlap, min_tissue_fraction, level, mpp, slide_mpp, tissue_mask)
    with open_slide(slide, mpp=slide_mpp) as wsi:
        _check_grid_fits(wsi, patch_size, level, mpp)
        mask = detect_tissue(wsi, user_mask=tissue_mask)
        grid = build_patch_grid(
            wsi,
            mask,
            patch_size=patch_size,
            level=level,
            mpp=mpp,
            overlap=overlap,
            min_tissue_fraction=min_tissue_fraction,
            skip_empty=True,
        )
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            save_tissue_overlay(wsi, mask, out, grid=grid)
        _print_json(
            {
                "slide": str(slide),
                "backend": wsi.info.backend,
                "tissue_level": mask.level,
                "tissue_fraction": round(float(mask.fraction), 4),
                "patch_level": grid.level,
                "patch_size": patch_size,
                "overlap": overlap,
                "min_tissue_fraction": min_tissue_fraction,
                "patch_count": len(grid),
                "overlay": out,
            }
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _check_grid_args(slide, patch_size, overlap, min_tissue_fraction, level, mpp, slide_mpp, tissue_mask) -> None:
    """The ``tissue`` command's options, checked before the slide is opened (one line naming the option)."""
    from mixsup_monai.utils.errors import InputError, InputNotFoundError

    where = os.path.abspath(slide)
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0:
        raise InputError("--patch-size must be a positive integer", where, f"got {patch_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < patch_size:
        raise InputError(f"--overlap must be an integer in [0, --patch-size = {patch_size})", where, f"got {overlap!r}")
    if not _is_number(min_tissue_fraction) or not 0 <= min_tissue_fraction <= 1:
        raise InputError("--min-tissue-fraction must be a fraction in [0, 1]", where, f"got {min_tissue_fraction!r}")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
        raise InputError("--level must be a non-negative integer", where, f"got {level!r}")
    for option, value in (("--mpp", mpp), ("--slide-mpp", slide_mpp)):
        if value is not None and (not _is_number(value) or value <= 0):
            raise InputError(f"{option} must be a positive number of microns per pixel", where, f"got {value!r}")
    if tissue_mask is not None and not Path(tissue_mask).is_file():
        raise InputNotFoundError(
            "tissue mask not found",
            os.path.abspath(tissue_mask),
            "this path does not exist; check its spelling and the current folder",
        )


def _check_grid_fits(wsi, patch_size: int, level: int | None, mpp: float | None) -> None:
    """The patch level exists and holds at least one patch: a patch larger than the slide is a wrong option."""
    from mixsup_monai.utils.errors import InputError

    info = wsi.info
    if level is not None and level >= info.level_count:
        raise InputError(
            f"--level {level} does not exist", info.path, f"the slide has levels 0..{info.level_count - 1}"
        )
    chosen = level if level is not None else (wsi.level_for_mpp(mpp) if mpp is not None else 0)
    width, height = info.level_dimensions[chosen]
    if width < patch_size or height < patch_size:
        raise InputError(
            "no patch fits the slide",
            info.path,
            f"the slide is {width} x {height} px at level {chosen}, smaller than one {patch_size} px patch; "
            "choose a finer level / smaller mpp or a smaller patch_size",
        )


def lsr_stats(
    datalist: str,
    out: str,
    blocks_per_z: int = 12,
    section: str = "training",
    seed: int = 0,
    csv: str | None = None,
) -> None:
    """Estimate the LSR label-count table p(c | z) and write it as JSON (the bundles' ``label_stats``).

    From a few blocks per z whose slides have a ``mask`` ("mask estimation"), or with ``--csv`` from a
    CSV of visual estimates (columns ``z`` and one per class name, fractions or percentages).

    Args:
        datalist: datalist with ``blocks`` (and ``mask`` on some slides unless ``--csv``).
        out: output JSON path.
        blocks_per_z: blocks examined per low-resolution label z (paper: 10-20).
        section: datalist section the blocks come from.
        seed: which blocks are drawn.
        csv: CSV of visual estimates instead of masks.
    """
    from mixsup_monai.data.datalist import load_datalist
    from mixsup_monai.methods.lsr.blocks import mask_estimation_samples
    from mixsup_monai.methods.lsr.label_stats import estimate_label_stats, estimate_label_stats_from_csv

    # the table this command writes is not the datalist's yet: check everything else
    data = load_datalist(datalist, task="lsr", without=("label_stats", "label_stats_rows"))
    if csv:
        table = estimate_label_stats_from_csv(csv, data["classes"])
    else:
        samples = mask_estimation_samples(data, blocks_per_z=blocks_per_z, sections=section, seed=seed)
        source = f"mask estimation: up to {blocks_per_z} {section} blocks per z of {datalist}, seed {seed}"
        table = estimate_label_stats(samples, data["classes"], source=source)
    z_in_data = sorted({b["z"] for s in data.get(section, []) for b in s.get("blocks", [])})
    table.validate(z_in_data=z_in_data, source_name=datalist)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.save(out)
    _print_json(table.to_dict())


def _read_class_map(path: str):
    """A label-map PNG / TIFF (:func:`~mixsup_monai.wsi.labels.read_label_map`) or ``.npy`` as an ``(H, W)`` array."""
    import numpy as np

    from mixsup_monai.utils.errors import InputError, InputNotFoundError, one_line
    from mixsup_monai.wsi.labels import read_label_map

    where = os.path.abspath(path)
    if not Path(path).is_file():
        raise InputNotFoundError(
            "label map not found", where, "this path does not exist; check its spelling and the current folder"
        )
    try:
        return np.load(path, allow_pickle=False) if Path(path).suffix.lower() == ".npy" else read_label_map(path)
    except (ValueError, OSError) as e:  # a colour image, a file that is no image / no array
        fix = "expected a single-channel uint8 PNG / TIFF or an integer .npy of class indices"
        raise InputError(
            "label map cannot be read as a class map", where, f"{fix} ({one_line(str(e)) or type(e).__name__})"
        ) from e


def geojson(
    label_map: str,
    classes: str | Sequence[str],
    downsample: float = 1.0,
    out: str | None = None,
    object_type: str = "annotation",
    min_area: int = 0,
    simplify: float = 0.0,
    include_background: bool = False,
) -> None:
    """Export a label map as QuPath-readable GeoJSON (level-0 pixel coordinates); print a JSON summary.

    Args:
        label_map: ``(H, W)`` class map: a single-channel uint8 PNG / TIFF or an integer ``.npy`` (255 = ignore).
        classes: class names by index, comma-separated (``normal,tumour``); index 0 is skipped as background.
        downsample: level-0 pixels per map pixel.
        out: output GeoJSON path (default: the map's path with the suffix ``.geojson``).
        object_type: QuPath object type, ``annotation``, ``detection`` or ``tile``.
        min_area: regions of fewer map pixels are dropped.
        simplify: Douglas-Peucker tolerance in map pixels (0: exact pixel edges).
        include_background: export class 0 too.
    """
    from mixsup_monai.utils.errors import InputError
    from mixsup_monai.visualize.geojson import label_map_to_geojson, write_geojson

    labels = _read_class_map(label_map)
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    try:
        collection = label_map_to_geojson(
            labels,
            names,
            downsample=downsample,
            min_area=min_area,
            simplify=simplify,
            object_type=object_type,
            include_background=include_background,
        )
    except InputError as e:  # the library names its argument (e.g. "downsample"): name the file, the option
        option = f"--{e.where.replace('_', '-')}"
        what = option + e.what[len(e.where) :] if e.what.startswith(e.where + " ") else e.what
        # from None: the error line reports the innermost input error of a chain, which would be the library's
        raise InputError(what, os.path.abspath(label_map), e.fix) from None
    path = write_geojson(out if out is not None else Path(label_map).with_suffix(".geojson"), collection)
    counts: dict[str, int] = {}
    for feature in collection["features"]:
        name = feature["properties"]["classification"]["name"]
        counts[name] = counts.get(name, 0) + 1
    _print_json(
        {"label_map": str(label_map), "out": str(path), "features": len(collection["features"]), "classes": counts}
    )


def zoo_package(bundle: str, out: str, weights: str | None = None, schema: str | None = None) -> None:
    """Lay a bundle out for the MONAI Model Zoo's checks (trained files as ``large_files.yml``); print it as JSON.

    Args:
        bundle: the bundle folder (e.g. ``bundles/mixsup``).
        out: output folder; check with the zoo's ``ci/verify_bundle.py -b <name> -p <out>/models``.
        weights: folder of the trained files (default: ``<bundle>/models``).
        schema: local copy of the metadata's schema (then nothing is downloaded).
    """
    from mixsup_monai.utils.zoo import package_for_zoo

    _print_json(package_for_zoo(bundle, out, weights_dir=weights, schema=schema).to_dict())


COMMANDS = {
    "demo-data": demo_data,
    "check-datalist": check_datalist,
    "slide-info": slide_info,
    "tissue": tissue,
    "lsr-stats": lsr_stats,
    "geojson": geojson,
    "zoo-package": zoo_package,
}


def error_line(error: BaseException, command: str = "") -> str:
    """The one line a failed command prints: ``error: <what> (<where>): <fix>``.

    :func:`mixsup_monai.utils.errors.error_line`, which the bundle runs print too.

    Args:
        error: what the command raised.
        command: the command's name, the ``where`` of an unexpected failure.
    """
    from mixsup_monai.utils.errors import error_line as _error_line

    return _error_line(error, command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command of :data:`COMMANDS` (``argv`` default: ``sys.argv[1:]``); on failure print one line, exit 1."""
    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    debug_flag = "--debug" in args
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire(COMMANDS, command=args, name="mixsup_monai")
    except Exception as e:  # a failure of the command itself (fire's usage errors exit through SystemExit)
        # imported only on failure: mixsup_monai.utils imports torch, which `--help` does not need
        from mixsup_monai.utils.errors import debug_requested

        if debug_flag or debug_requested([]):
            raise
        sys.stdout.flush()
        print(error_line(e, args[0] if args else ""), file=sys.stderr)
        sys.exit(1)
