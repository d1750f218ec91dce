"""Every bad input of the catalogue (``tests/bad_inputs_catalogue.py``) gets its one line, and nothing is lost.

Each case runs the command line in-process in a folder holding a small valid cohort: the command must exit 1,
print exactly one ``error:`` line (the catalogue's, with the case's folder for ``{tmp}``) and no traceback, list
the catalogue's problem when it is a datalist check, and leave every file of the folder as it was (nothing
written, nothing lost). The README's table is rendered from the same catalogue.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs_catalogue import CASES, build_cohort  # noqa: E402

from mixsup_monai.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    build_cohort(root)
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file (symbolic links by their target)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _pattern(template: str, tmp: Path) -> re.Pattern:
    """The template as a regex: ``{tmp}`` is the folder, another ``{name}`` any text (a measured number)."""
    parts = re.split(r"(\{\w+\})", template.replace("{{", "\x00").replace("}}", "\x01"))
    regex = ""
    for part in parts:
        if part == "{tmp}":
            regex += re.escape(str(tmp))
        elif re.fullmatch(r"\{\w+\}", part):
            regex += r"[^()]+?"
        else:
            regex += re.escape(part.replace("\x00", "{").replace("\x01", "}"))
    return re.compile(regex)


def test_catalogue_has_at_least_30_distinct_cases():
    names = [case.name for case in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_its_line_and_nothing_is_lost(case, cohort, tmp_path, monkeypatch, capsys):
    tmp = tmp_path / "case"
    shutil.copytree(cohort, tmp, symlinks=True)
    monkeypatch.chdir(tmp)
    monkeypatch.delenv("MIXSUP_MONAI_DEBUG", raising=False)
    argv = case.make(tmp)
    before = _snapshot(tmp)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert _pattern(case.line, tmp).fullmatch(lines[0]), f"\n{lines[0]}\n{case.line}"
    if case.problem is not None:
        listed = [line.removeprefix("  - ") for line in out.splitlines() if line.startswith("  - ")]
        assert any(_pattern(case.problem, tmp).fullmatch(line) for line in listed), "\n".join(listed)
    assert _snapshot(tmp) == before  # nothing written, nothing lost


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0, reason="root reads every file; no setpriv")
def test_unreadable_slide_and_datalist(cohort, tmp_path):
    """Permissions are real: as root the file-reading capabilities are dropped (``setpriv``), else ``chmod 000``."""
    tmp = tmp_path / "case"
    shutil.copytree(cohort, tmp)
    (tmp / "slides/a.tif").chmod(0)
    (tmp / "mixsup.json").chmod(0)
    prefix = []
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", drop, "--inh-caps", drop]
    for args, expected in (
        (["slide-info", "slides/a.tif"], f"error: slide is not readable ({tmp}/slides/a.tif): "),
        (["check-datalist", "mixsup.json"], f"error: datalist is not readable ({tmp}/mixsup.json): "),
    ):
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "mixsup_monai", *args], cwd=tmp, capture_output=True, text=True, timeout=120
        )
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0] == expected + "no read permission for this user; `chmod a+r` it or ask its owner"
    (tmp / "slides/a.tif").chmod(0o644)


def test_readme_lists_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    for case in CASES:
        row = readme_row(case)
        assert row in readme, f"README lacks the row:\n{row}"


def readme_row(case) -> str:
    """``| name | `message` |``, escaped for a Markdown table (``|``, and backticks inside the message)."""
    message = readme_message(case)
    code = f"`` {message} ``" if "`" in message else f"`{message}`"
    return f"| {case.name.replace('|', chr(92) + '|')} | {code} |"


def readme_message(case) -> str:
    """The case's line as the README shows it: ``<tmp>`` for the folder, ``<name>`` for measured values."""
    text = case.problem if case.problem is not None else case.line
    text = text.replace("{{", "\x00").replace("}}", "\x01")
    text = re.sub(r"\{(\w+)\}", r"<\1>", text)
    return text.replace("\x00", "{").replace("\x01", "}").replace("|", "\\|")


if __name__ == "__main__":  # print the README table
    print("| bad input | message |\n|---|---|")
    for case in CASES:
        print(readme_row(case))
