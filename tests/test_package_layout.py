"""The package's import graph: every module imports on its own, no cycles, layers point one way (README)."""

from __future__ import annotations

import ast
import multiprocessing
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mixsup_monai"

#: the README's layout rule, bottom to top: a module imports only from its own layer or the ones below;
#: packages of one layer may import each other (without cycles); a method never imports another method.
LAYERS = (
    ("utils",),
    ("wsi",),
    ("data",),
    ("transforms", "inferers", "metrics", "visualize"),
    ("rounds",),
    ("handlers",),
    ("methods",),
    ("demo",),
    ("cli", "__main__"),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every mixsup_monai module ``path`` imports, at module level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in modules:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, packages in enumerate(LAYERS):
        if top in packages:
            return rank
    raise AssertionError(f"{module}: package {top!r} is not in the README's layout rule (LAYERS)")


def test_import_graph_has_no_cycle():
    graph = _graph()
    # a package's __init__ re-exports its modules; an edge *to* a package means "some module of it"
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers_point_one_way():
    wrong = []
    for module, deps in _graph().items():
        if module == "mixsup_monai":
            continue
        for dep in deps:
            if dep == "mixsup_monai":
                continue
            if _layer(dep) > _layer(module):
                wrong.append(f"{module} imports {dep} (a higher layer)")
            parts, dep_parts = module.split("."), dep.split(".")
            same_kind = parts[1] == dep_parts[1] == "methods" and len(parts) > 2 and len(dep_parts) > 2
            if same_kind and parts[2] != dep_parts[2]:
                wrong.append(f"{module} imports {dep} (another method)")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_sees_a_cycle(tmp_path, monkeypatch):
    """The cycle search itself can fail: a fake package with a -> b -> a is reported."""
    pkg = tmp_path / "mixsup_monai"
    (pkg / "wsi").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "wsi" / "__init__.py").write_text("")
    (pkg / "wsi" / "a.py").write_text("def f():\n    from mixsup_monai.wsi.b import g\n")
    (pkg / "wsi" / "b.py").write_text("from mixsup_monai.wsi.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    with pytest.raises(AssertionError, match="mixsup_monai.wsi.a -> mixsup_monai.wsi.b -> mixsup_monai.wsi.a"):
        test_import_graph_has_no_cycle()


def _import_alone(name: str, queue) -> None:
    try:
        __import__(name)
        queue.put((name, None))
    except BaseException as e:  # report any failure of the child to the parent
        queue.put((name, f"{type(e).__name__}: {e}"))


def test_every_module_imports_on_its_own():
    """Each module in a fresh fork where no mixsup_monai module is imported yet (third-party ones are)."""
    import ignite  # noqa: F401 (heavy third-party imports once, in the parent)
    import monai  # noqa: F401
    import torch  # noqa: F401

    if any(m == "mixsup_monai" or m.startswith("mixsup_monai.") for m in sys.modules):
        saved = {m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] == "mixsup_monai"}
    else:
        saved = {}
    try:
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        failures = []
        for name in _modules():
            if name.endswith("__main__"):
                continue
            proc = ctx.Process(target=_import_alone, args=(name, queue))
            proc.start()
            proc.join(120)
            _, error = queue.get(timeout=5)
            if error is not None:
                failures.append(f"{name}: {error}")
    finally:
        sys.modules.update(saved)
    assert not failures, "\n".join(failures)
