"""No function of the library is longer than 80 lines (def line to last line, docstring included): split long
ones into named steps (issue 9)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mixsup_monai"
MAX_LINES = 80


def long_functions(source: str, filename: str = "<string>", max_lines: int = MAX_LINES) -> list[str]:
    """``"file:line qualname (N lines)"`` for every function or method of ``source`` longer than ``max_lines``.

    Nested functions and methods are measured on their own as well as inside their parent; decorators are not
    counted (the length runs from the ``def`` line to the function's last line).
    """
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if length > max_lines:
                    found.append(f"{filename}:{child.lineno} {name} ({length} lines)")
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=filename), "")
    return found


def _body(n: int, indent: str) -> str:
    return "".join(f"{indent}x{i} = {i}\n" for i in range(n))


def test_counter_sees_long_functions():
    source = (
        "import functools\n\n\n"
        "def short():\n    return 1\n\n\n"
        "@functools.lru_cache\n"
        "def long_one():\n" + _body(MAX_LINES, "    ") + "\n\n"  # def line + 80 body lines = 81 lines
        "def exactly_max():\n" + _body(MAX_LINES - 1, "    ") + "\n\n"
        "class Holder:\n"
        "    async def method(self):\n"
        "        def inner():\n" + _body(MAX_LINES, "            ") + "        return inner\n"
    )
    found = long_functions(source, "synthetic.py")
    assert found == [
        f"synthetic.py:9 long_one ({MAX_LINES + 1} lines)",
        f"synthetic.py:{9 + MAX_LINES + 3 + MAX_LINES + 3} Holder.method ({MAX_LINES + 3} lines)",
        f"synthetic.py:{9 + MAX_LINES + 3 + MAX_LINES + 4} Holder.method.inner ({MAX_LINES + 1} lines)",
    ]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_function_longer_than_max(path: Path):
    found = long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert not found, f"functions longer than {MAX_LINES} lines (split them into named steps):\n" + "\n".join(found)
