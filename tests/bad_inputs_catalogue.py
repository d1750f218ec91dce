"""The catalogue of bad inputs: how each one is made and the one line the command line answers it with.

Used by ``tests/test_bad_inputs.py`` (which runs every case) and by the README's table (rendered from here, with
``<tmp>`` for the folder a case runs in). Each case builds its input in a fresh folder that holds a small valid
cohort (:func:`build_cohort`), runs one command, and must get exactly ``line`` -- and, when given, ``problem``
among the problems ``check-datalist`` lists.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

#: the fix every datalist report ends with.
REPORT = "fix the ones listed above (see README: datalist)"
CONVERT = "`vips tiffsave {name} {stem}.tif --tile --pyramid --compression jpeg`"


def tissue_image() -> np.ndarray:
    """``(1024, 1024, 3)`` real IHC tissue (scikit-image's sample image, no download)."""
    from skimage import data

    return np.tile(data.immunohistochemistry(), (2, 2, 1))


def build_cohort(root: Path) -> None:
    """A valid cohort for every task in ``root``: slides (3-level pyramids), masks, datalists, a p(c|z) table."""
    from mixsup_monai.wsi import write_pyramidal_tiff

    image = tissue_image()
    (root / "slides").mkdir()
    write_pyramidal_tiff(root / "slides/a.tif", image, mpp=0.5, tile_size=256, min_level_size=256)
    for name in ("b", "c", "d"):
        shutil.copy(root / "slides/a.tif", root / f"slides/{name}.tif")
    mask = np.zeros((512, 512), np.uint8)  # level 1
    mask[128:384, 128:384] = 1
    Image.fromarray(mask).save(root / "mask.png")
    tumour = np.full((512, 512), 255, np.uint8)
    tumour[64:448, 64:448] = 0
    tumour[128:384, 128:384] = 1
    Image.fromarray(tumour).save(root / "tumour.png")
    pixel = {"image": "slides/c.tif", "label": 1, "mask": "mask.png", "mask_level": 1, "regions": [[0, 0, 1024, 1024]]}
    mixsup = {
        "name": "catalogue",
        "task": "mixsup",
        "classes": ["background", "tumour"],
        "training": [{"image": "slides/a.tif", "label": 0}, {"image": "slides/b.tif", "label": 1}, pixel],
    }
    blocks = [{"location": [0, 0], "size": [512, 512], "z": 0}, {"location": [512, 512], "size": [512, 512], "z": 1}]
    lsr = {
        "name": "catalogue",
        "task": "lsr",
        "classes": ["benign", "tumour"],
        "label_stats": "label_stats.json",
        "training": [{"image": "slides/a.tif", "blocks": blocks}],
    }
    table = {
        "classes": ["benign", "tumour"],
        "source": "catalogue",
        "stats": [{"z": 0, "mean": [0.9, 0.1], "std": [0.05, 0.05]}, {"z": 1, "mean": [0.4, 0.6], "std": [0.1, 0.1]}],
    }
    npl = {
        "name": "catalogue",
        "task": "npl",
        "classes": ["other", "grade3", "grade4"],
        "training": [
            {"image": "slides/a.tif", "mask": "mask.png", "mask_level": 1},
            {"image": "slides/b.tif", "proportions": {"grade3": 0.7, "grade4": 0.3}, "tumour_mask": "tumour.png"},
        ],
    }
    for name, content in (("mixsup", mixsup), ("lsr", lsr), ("npl", npl), ("label_stats", table)):
        (root / f"{name}.json").write_text(json.dumps(content, indent=1))


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        name: what is wrong, as the README's table says it.
        make: builds the bad input in the case's folder (a valid cohort) and returns the command's arguments.
        line: the exact ``error: ...`` line, with ``{tmp}`` for the case's folder.
        problem: for ``check-datalist``, the exact problem line (after ``  - ``) that must be listed.
    """

    name: str
    make: Callable[[Path], list[str]]
    line: str
    problem: str | None = None


def _report(n: int, datalist: str) -> str:
    return f"error: datalist has {n} problem(s) ({{tmp}}/{datalist}): {REPORT}"


# ------------------------------------------------------------------------------------------- slide files
def _missing(tmp: Path) -> list[str]:
    return ["slide-info", "slides/nope.svs"]


def _broken_link(tmp: Path) -> list[str]:
    (tmp / "slides/link.svs").symlink_to(tmp / "slides/gone.svs")
    return ["slide-info", "slides/link.svs"]


def _looping_link(tmp: Path) -> list[str]:
    (tmp / "slides/loop.svs").symlink_to(tmp / "slides/loop.svs")
    return ["slide-info", "slides/loop.svs"]


def _folder(tmp: Path) -> list[str]:
    return ["slide-info", "slides"]


def _empty(tmp: Path) -> list[str]:
    (tmp / "slides/empty.svs").write_bytes(b"")
    return ["slide-info", "slides/empty.svs"]


def _truncated(tmp: Path) -> list[str]:
    whole = (tmp / "slides/a.tif").read_bytes()
    (tmp / "slides/cut.tif").write_bytes(whole[: len(whole) // 2])
    return ["slide-info", "slides/cut.tif"]


def _not_a_tiff(tmp: Path) -> list[str]:
    (tmp / "slides/text.tif").write_text("not a tiff\n")
    return ["slide-info", "slides/text.tif"]


def _unknown_format(tmp: Path) -> list[str]:
    (tmp / "slides/scan.mrxs").write_text("not a slide\n")
    return ["slide-info", "slides/scan.mrxs"]


def _huge_plain_image(tmp: Path) -> list[str]:
    Image.fromarray(np.full((8200, 8200, 3), 230, np.uint8)).save(tmp / "slides/scan.jpg", quality=30)
    return ["tissue", "slides/scan.jpg"]


def _damaged_png(tmp: Path) -> list[str]:
    Image.fromarray(tissue_image()[:256, :256]).save(tmp / "tile.png")
    data = (tmp / "tile.png").read_bytes()
    (tmp / "tile.png").write_bytes(data[: len(data) // 3])
    return ["tissue", "tile.png"]


def _level_that_does_not_decode(tmp: Path) -> list[str]:
    raw = bytearray((tmp / "slides/a.tif").read_bytes())
    with tifffile.TiffFile(tmp / "slides/a.tif") as tif:
        page = tif.pages[1]
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            raw[offset + 20 : offset + count] = (
                np.random.default_rng(0).integers(0, 256, count - 20, np.uint8).tobytes()
            )
    (tmp / "slides/bad_level.tif").write_bytes(bytes(raw))
    return ["tissue", "slides/bad_level.tif", "--level", "1"]


def _tissue_args(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["tissue", "slides/a.tif", *args]


SLIDE = "{tmp}/slides/a.tif"
SLIDE_CASES = [
    Case(
        "slide file does not exist",
        _missing,
        "error: slide not found ({tmp}/slides/nope.svs): this path does not exist; check its spelling and the current folder",
    ),
    Case(
        "slide is a broken symbolic link",
        _broken_link,
        "error: slide is a broken or looping symbolic link ({tmp}/slides/link.svs): point the link at an existing slide file",
    ),
    Case(
        "slide is a symbolic link loop",
        _looping_link,
        "error: slide is a broken or looping symbolic link ({tmp}/slides/loop.svs): point the link at an existing slide file",
    ),
    Case(
        "slide is a folder",
        _folder,
        "error: slide is a folder ({tmp}/slides): expected a slide file (.svs, .tif, .ndpi, .mrxs, ...); for a DICOM WSI "
        "give one of its .dcm files",
    ),
    Case(
        "slide file is empty",
        _empty,
        "error: slide file is empty (0 bytes) ({tmp}/slides/empty.svs): copy the slide again from its source",
    ),
    Case(
        "slide file truncated (half its bytes)",
        _truncated,
        "error: slide file is damaged ({tmp}/slides/cut.tif): tile 11 of image 0 ends at byte {cut_end}, past the end "
        "of the file ({cut_size} bytes; 5 of its 16 tiles): the file is truncated; copy the slide again from its source",
    ),
    Case(
        "`.tif` that is not a TIFF",
        _not_a_tiff,
        "error: slide file is damaged ({tmp}/slides/text.tif): its first bytes are not a TIFF header (a file of "
        "another kind under a TIFF name?); copy the slide again from its source",
    ),
    Case(
        "file no reader opens",
        _unknown_format,
        "error: no reader can open the slide ({tmp}/slides/scan.mrxs): cucim: RuntimeError: cuCIM is only used for "
        ".tif/.tiff/.svs files, got 'scan.mrxs'; openslide: OpenSlideUnsupportedFormatError: Unsupported or missing "
        "image file; tifffile: RuntimeError: the tifffile reader reads .tif/.tiff/.svs/.ndpi/.scn/.bif/.qptiff files "
        "only -- check that it is a whole-slide image (SVS, TIFF, NDPI, MRXS, DICOM, ...)",
    ),
    Case(
        "plain JPEG too large to read whole (8200² px)",
        _huge_plain_image,
        "error: plain JPEG image of 8200 x 8200 px is too large to read whole (above 67108864 px) ({tmp}/slides/scan.jpg): "
        f"convert it to a tiled pyramid, e.g. {CONVERT.format(name='scan.jpg', stem='scan')}, or write one with "
        "mixsup_monai.wsi.write_pyramidal_tiff",
    ),
    Case(
        "plain PNG cut short",
        _damaged_png,
        "error: plain PNG image cannot be decoded ({tmp}/tile.png): OSError: image file is truncated",
    ),
    Case(
        "a level that does not decode, asked for",
        _level_that_does_not_decode,
        "error: level 1 of the slide does not decode ({tmp}/slides/bad_level.tif): it decodes to other colours than "
        "level 0 ({bad_level_colours}); read one of the levels that do ([0, 2]) or export the slide again",
    ),
    Case(
        "negative slide MPP",
        _tissue_args("--slide-mpp", "-0.5"),
        "error: --slide-mpp must be a positive number of microns per pixel ({tmp}/slides/a.tif): got -0.5",
    ),
    Case(
        "patch size 0",
        _tissue_args("--patch-size", "0"),
        "error: --patch-size must be a positive integer ({tmp}/slides/a.tif): got 0",
    ),
    Case(
        "negative patch size",
        _tissue_args("--patch-size", "-256"),
        "error: --patch-size must be a positive integer ({tmp}/slides/a.tif): got -256",
    ),
    Case(
        "patch larger than the slide",
        _tissue_args("--patch-size", "4096"),
        "error: no patch fits the slide ({tmp}/slides/a.tif): the slide is 1024 x 1024 px at level 0, smaller than "
        "one 4096 px patch; choose a finer level / smaller mpp or a smaller patch_size",
    ),
    Case(
        "overlap as large as the patch",
        _tissue_args("--overlap", "256"),
        "error: --overlap must be an integer in [0, --patch-size = 256) ({tmp}/slides/a.tif): got 256",
    ),
    Case(
        "level that does not exist",
        _tissue_args("--level", "7"),
        "error: --level 7 does not exist ({tmp}/slides/a.tif): the slide has levels 0..2",
    ),
    Case(
        "tissue mask file missing",
        _tissue_args("--tissue-mask", "nope.png"),
        "error: tissue mask not found ({tmp}/nope.png): this path does not exist; check its spelling and the current folder",
    ),
]


# ------------------------------------------------------------------------------------------- datalists
def _datalist_file(content: bytes | str, name: str = "bad.json") -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        data = content.encode() if isinstance(content, str) else content
        (tmp / name).write_bytes(data)
        return ["check-datalist", name]

    return make


def _edited(datalist: str, change: Callable[[dict], None], *extra: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        edit_json(tmp / datalist, change)
        return ["check-datalist", datalist, *extra]

    return make


def _set(path: tuple, value) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: tuple) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _with_files(make: Callable[[Path], list[str]], prepare: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def both(tmp: Path) -> list[str]:
        prepare(tmp)
        return make(tmp)

    return both


def _same_name_elsewhere(tmp: Path) -> None:
    (tmp / "other").mkdir()
    shutil.copy(tmp / "slides/a.tif", tmp / "other/a.tif")


def _mask_16bit(tmp: Path) -> None:
    Image.fromarray(np.zeros((512, 512), np.uint16)).save(tmp / "mask16.png")


def _mask_values(tmp: Path) -> None:
    Image.fromarray(np.full((512, 512), 7, np.uint8)).save(tmp / "mask7.png")


def _table(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda tmp: edit_json(tmp / "label_stats.json", change)


def _other_layout(tmp: Path) -> None:
    (tmp / "label_stats.json").write_text(json.dumps({"0": {"tumour": [0.1, 0.02]}, "1": {"tumour": [0.6, 0.1]}}))


def _truncate_listed(tmp: Path) -> None:
    whole = (tmp / "slides/b.tif").read_bytes()
    (tmp / "slides/b.tif").write_bytes(whole[: len(whole) // 2])


def _add_slide(section: str, slide: dict) -> Callable[[dict], None]:
    return lambda data: data.setdefault(section, []).append(copy.deepcopy(slide))


DL = "{tmp}/mixsup.json"
DATALIST_CASES = [
    Case(
        "datalist file does not exist",
        lambda tmp: ["check-datalist", "nope.json"],
        "error: datalist not found ({tmp}/nope.json): this path does not exist; expected a JSON file (see README: datalist)",
    ),
    Case(
        "datalist is a folder",
        lambda tmp: ["check-datalist", "slides"],
        "error: datalist is a folder ({tmp}/slides): expected a datalist JSON file (see README: datalist)",
    ),
    Case(
        "datalist is not valid JSON",
        _datalist_file('{"task": "mixsup",\n  "classes": ["a" "b"]}\n'),
        "error: datalist is not valid JSON ({tmp}/bad.json): Expecting ',' delimiter at line 2, column 19",
    ),
    Case(
        "datalist is a JSON list",
        _datalist_file("[]"),
        'error: datalist is not a JSON object ({tmp}/bad.json): expected {{"task": ..., "classes": ..., "training": '
        "[...]}} at the top level, got list",
    ),
    Case(
        "datalist is not UTF-8",
        _datalist_file(b'{"name": "\xff"}'),
        "error: datalist is not a text file ({tmp}/bad.json): expected UTF-8 JSON (invalid start byte)",
    ),
    Case(
        "listed slide missing",
        _edited("mixsup.json", _set(("training", 0, "image"), "slides/nope.tif")),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[0] ({tmp}/slides/nope.tif) key 'image': file does not exist",
    ),
    Case(
        "listed slide truncated",
        _with_files(lambda tmp: ["check-datalist", "mixsup.json"], _truncate_listed),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[1] ({tmp}/slides/b.tif) key 'image': unreadable slide: slide file is damaged "
        "({tmp}/slides/b.tif): tile 11 of image 0 ends at byte {cut_end}, past the end of the file ({cut_size} bytes; "
        "5 of its 16 tiles): the file is truncated; copy the slide again from its source",
    ),
    Case(
        "same slide listed twice",
        _edited("mixsup.json", _add_slide("validation", {"image": "slides/a.tif", "label": 0})),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: validation[0] ({tmp}/slides/a.tif) key 'image': duplicate image, already listed as training[0]",
    ),
    Case(
        "two slides with one name (duplicate slide ids)",
        _with_files(
            _edited("mixsup.json", _add_slide("validation", {"image": "other/a.tif", "label": 0})),
            _same_name_elsewhere,
        ),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: validation[0] ({tmp}/other/a.tif) key 'image': slide name 'a' is also the name of "
        "training[0] ({tmp}/slides/a.tif): a slide's file name without folder and suffix is its identity in seeds, "
        "statistics and round records; rename one of the files",
    ),
    Case(
        "mask of the wrong dtype (16-bit)",
        _with_files(_edited("mixsup.json", _set(("training", 2, "mask"), "mask16.png")), _mask_16bit),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[2] ({tmp}/slides/c.tif) key 'mask': unreadable label map: mask "
        "'{tmp}/mask16.png': expected a single-channel uint8 label map (PIL mode 'L' or 'P'), got mode 'I;16'",
    ),
    Case(
        "mask of the wrong level",
        _edited("mixsup.json", _set(("training", 2, "mask_level"), 0)),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[2] ({tmp}/slides/c.tif) key 'mask': mask is 512 x 512 px but slide level 0 is "
        "1024 x 1024 px (width x height)",
    ),
    Case(
        "mask level that does not exist",
        _edited("mixsup.json", _set(("training", 2, "mask_level"), 5)),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[2] ({tmp}/slides/c.tif) key 'mask_level': level 5 does not exist: the slide has "
        "3 levels",
    ),
    Case(
        "mask values that are no class",
        _with_files(_edited("mixsup.json", _set(("training", 2, "mask"), "mask7.png")), _mask_values),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[2] ({tmp}/slides/c.tif) key 'mask': label values [7] are not class indices 0..1 "
        "or 255 (ignore)",
    ),
    Case(
        "negative region size",
        _edited("mixsup.json", _set(("training", 2, "regions"), [[0, 0, -10, 100]])),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[2] ({tmp}/slides/c.tif) key 'regions[0]': box [0, 0, -10, 100] must have x, y >= 0 "
        "and w, h > 0",
    ),
    Case(
        "huge region (outside the slide)",
        _edited("mixsup.json", _set(("training", 2, "regions"), [[0, 0, 10**9, 10**9]])),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[2] ({tmp}/slides/c.tif) key 'regions[0]': box [0, 0, 1000000000, 1000000000] "
        "(x, y, w, h) extends outside the slide (1024 x 1024 px at level 0)",
    ),
    Case(
        "slide label out of range",
        _edited("mixsup.json", _set(("training", 1, "label"), 3)),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: training[1] ({tmp}/slides/b.tif) key 'label': slide label 3 out of range: expected 0..1",
    ),
    Case(
        "MixSup without negative slides",
        _edited("mixsup.json", _set(("training", 0, "label"), 1)),
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: key 'training': MixSup needs negative training slides ('label': 0), found none",
    ),
    Case(
        "datalist of another task",
        lambda tmp: ["check-datalist", "mixsup.json", "--task", "lsr"],
        _report(1, "mixsup.json"),
        "{tmp}/mixsup.json: key 'task': got 'mixsup', but this bundle trains 'lsr'",
    ),
    Case(
        "negative proportion",
        _edited("npl.json", _set(("training", 1, "proportions"), {"grade3": 1.2, "grade4": -0.2})),
        _report(2, "npl.json"),
        "{tmp}/npl.json: training[1] ({tmp}/slides/b.tif) key 'proportions.grade4': expected a fraction in [0, 1], "
        "got -0.2",
    ),
    Case(
        "proportions that do not sum to 1",
        _edited("npl.json", _set(("training", 1, "proportions"), {"grade3": 0.5, "grade4": 0.3})),
        _report(1, "npl.json"),
        "{tmp}/npl.json: training[1] ({tmp}/slides/b.tif) key 'proportions': fractions sum to 0.8000, expected 1 ± 0.02",
    ),
    Case(
        "NPL proportions without a tumour mask",
        _edited("npl.json", _delete(("training", 1, "tumour_mask"))),
        _report(1, "npl.json"),
        "{tmp}/npl.json: training[1] ({tmp}/slides/b.tif) key 'tumour_mask': slide has 'proportions' but no "
        "'tumour_mask' (the tumour outline its proportions refer to): add a label map 1 = tumour, 0 = other tissue, "
        "255 = glass",
    ),
    Case(
        "LSR p(c|z) table in another layout",
        _with_files(lambda tmp: ["check-datalist", "lsr.json"], _other_layout),
        _report(1, "lsr.json"),
        "{tmp}/lsr.json: key 'label_stats': label-statistics table '{tmp}/label_stats.json': top-level keys ['0', "
        '\'1\'] are not the table layout: expected {{"classes": [...], "source": "...", "stats": [{{"z": 0, "mean": '
        '[...], "std": [...]}}]}}',
    ),
    Case(
        "LSR p(c|z) table with NaN",
        _with_files(lambda tmp: ["check-datalist", "lsr.json"], _table(_set(("stats", 0, "mean", 0), float("nan")))),
        _report(1, "lsr.json"),
        "{tmp}/lsr.json: key 'label_stats': label-statistics table '{tmp}/label_stats.json': stats[0].mean[0] = nan: "
        "expected a fraction in [0, 1]",
    ),
    Case(
        "LSR p(c|z) table with a negative std",
        _with_files(lambda tmp: ["check-datalist", "lsr.json"], _table(_set(("stats", 1, "std", 1), -0.1))),
        _report(1, "lsr.json"),
        "{tmp}/lsr.json: key 'label_stats': label-statistics table '{tmp}/label_stats.json': stats[1].std[1] = -0.1: "
        "expected a finite standard deviation >= 0 (use 0.0 when every block had the same fraction)",
    ),
    Case(
        "LSR block z missing from the table",
        _edited("lsr.json", _set(("training", 0, "blocks", 1, "z"), 7)),
        _report(1, "lsr.json"),
        "{tmp}/lsr.json: training[0] ({tmp}/slides/a.tif) key 'blocks[1].z': z = 7 has no row in the "
        "label-statistics table '{tmp}/label_stats.json' (its z values are [0, 1]); add a row for z = 7",
    ),
    Case(
        "LSR block of negative size",
        _edited("lsr.json", _set(("training", 0, "blocks", 0, "size"), [-512, 512])),
        _report(1, "lsr.json"),
        "{tmp}/lsr.json: training[0] ({tmp}/slides/a.tif) key 'blocks[0]': box [0, 0, -512, 512] must have x, y >= 0 "
        "and w, h > 0",
    ),
]

CASES = SLIDE_CASES + DATALIST_CASES
