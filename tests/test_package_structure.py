"""The package's layering, checked from the source: models/ and data/ know nothing of each other or of the
engine, the engine does not import the CLI, no module imports itself back through others (lazy imports inside
functions count too), and every module stays readable in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import hiera_video

PKG = Path(hiera_video.__file__).parent
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the hiera_video modules it imports (module level and inside functions)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    deps: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                # the deepest hiera_video module the import names ("from x import y": y may be a module or not)
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("hiera_video"):
                    out.add(t)
        deps[name] = out
    return deps


def test_layers_keep_to_themselves():
    for module, imported in _imports().items():
        if module.startswith(("hiera_video.models", "hiera_video.data")):
            own = module.split(".")[1]
            other = {"models": "data", "data": "models"}[own]
            bad = {m for m in imported if m.startswith((f"hiera_video.{other}", "hiera_video.engine",
                                                        "hiera_video.cli"))}
            assert not bad, f"{module} imports {sorted(bad)}: models/ and data/ know nothing of each other"
        if module.startswith("hiera_video.engine"):
            assert "hiera_video.cli" not in imported, f"{module} imports the CLI"


def test_no_import_cycle():
    deps = _imports()
    # Package __init__ files re-export their submodules; an edge into a package's own __init__ from inside the
    # package is how Python resolves `from . import x`, not a dependency on the package's other modules.
    for name in deps:
        deps[name] = {d for d in deps[name] if not (PKG.joinpath(*d.split(".")[1:], "__init__.py").exists()
                                                    and name.startswith(d + "."))}
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}"
        if node in done:
            return
        for d in sorted(deps.get(node, ())):
            if not PKG.joinpath(*d.split(".")[1:], "__init__.py").exists():  # packages re-export; skip them
                visit(d, stack + [node])
        done.add(node)

    for module in sorted(deps):
        visit(module, [])


def test_every_module_reads_in_one_sitting():
    long = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along their concepts): {long}"
