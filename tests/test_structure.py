"""The shape of the package: no import cycle, no file over 500 lines, and no module that uses
another module's private names (issue 24's acceptance), each checked on the source's AST.

The private-name rule, precisely. A *private name* has one leading underscore and is not a dunder
(``_chunks``, not ``__init__``). A module may use a private name

- on ``self``, ``cls`` or ``super()``: the object's own (``self._x``);
- when the module itself defines it: a ``def``/``class`` of that name, or an assignment to it as
  a name or an attribute (``self._x = ...``), so a class may read ``other._x`` of its own kind;
- when it comes from a *private module* (a file whose name starts with "_", such as
  ``cli/_args.py`` or ``_files.py``) of a package that holds the module: a private module is
  its package's internal toolbox, shared by the package's modules and sub-packages.

Anything else is flagged: ``from sivae.x import _y``, ``x._y`` on an imported sivae module, and
``obj._y`` where ``_y`` is defined by another sivae module only (``model._need_data`` in tl).
Private names that no sivae module defines (a third-party library's) are outside this rule.
The rule goes by names, not types: a name defined both here and elsewhere counts as this
module's own.
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

import sivae

PACKAGE = pathlib.Path(sivae.__file__).parent
MAX_LINES = 500


# -- imports and cycles -----------------------------------------------------------------------------
def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_targets(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    # the absolute name of the module an ``from ... import`` reads from
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> set[str]:
    """Modules of the package that a file imports, at any depth of the file (function bodies too)."""
    package = root.name
    module, is_package = _module_name(path, root), path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            name = _import_targets(node, module, is_package)
            targets = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == package or t.startswith(package + ".")}
    return found


def _module_file(name: str, root: pathlib.Path = PACKAGE) -> pathlib.Path | None:
    parts = name.split(".")[1:]
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def test_no_import_cycle_inside_the_package() -> None:
    graph: dict[pathlib.Path, set[pathlib.Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        targets = {_module_file(name) for name in _imports(path)}
        # a package's __init__ is a namespace of lazy re-exports (PEP 562): follow real modules
        graph[path] = {t for t in targets if t is not None and t != path and t.name != "__init__.py"}
    state: dict[pathlib.Path, int] = {}

    def visit(node: pathlib.Path, trail: list[pathlib.Path]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(p.name for p in cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_no_source_file_is_over_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


# -- private names ----------------------------------------------------------------------------------
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: defs, classes, and assignments to names or attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if _is_private(n)}


def _shared_with(source: str, module: str) -> bool:
    # a private module's names are shared with the modules of its package and sub-packages
    parent, _, leaf = source.rpartition(".")
    return leaf.startswith("_") and (module == parent or module.startswith(parent + "."))


def private_uses(root: pathlib.Path) -> list[str]:
    """Every use of another module's private name in the package at ``root``, as
    "path:line: what" (empty when the package keeps the rule in this file's docstring)."""
    files = sorted(root.rglob("*.py"))
    trees = {p: ast.parse(p.read_text()) for p in files}
    defined = {p: _defined(t) for p, t in trees.items()}
    anywhere = set().union(*defined.values())
    package = root.name
    found = []
    for path, tree in trees.items():
        module, is_package = _module_name(path, root), path.name == "__init__.py"
        where = path.relative_to(root.parent)
        aliases: dict[str, str] = {}  # local name -> sivae module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _import_targets(node, module, is_package)
                if source != package and not source.startswith(package + "."):
                    continue
                for a in node.names:
                    if _module_file(f"{source}.{a.name}", root) is not None:
                        aliases[a.asname or a.name] = f"{source}.{a.name}"
                    elif _is_private(a.name) and not _shared_with(source, module):
                        found.append(f"{where}:{node.lineno}: imports {a.name} from {source}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(package + ".") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                continue
            if isinstance(base, ast.Name) and base.id in aliases:
                if aliases[base.id] != module and not _shared_with(aliases[base.id], module):
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (private to {aliases[base.id]})")
            elif node.attr not in defined[path] and node.attr in anywhere:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (defined in another module)")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    found = private_uses(PACKAGE)
    assert not found, "private names used outside their module:\n" + "\n".join(found)


def test_the_private_name_rule_flags_what_it_should_and_nothing_else(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "model.py": """
            _CHUNK = 8
            class Model:
                def __init__(self):
                    self._cells = []
                def _need_data(self):
                    return self._cells
                def same(self, other):
                    return other._cells == self._cells
            """,
        "_toolbox.py": "def _helper():\n    return 1\n",
        "tl/__init__.py": "",
        "tl/hubs.py": """
            from pkg._toolbox import _helper
            from pkg.model import _CHUNK
            from pkg import model as m
            class Tool:
                def __init__(self):
                    self._own = 1
                def run(self, model):
                    model._need_data()
                    return self._own, m._CHUNK, _helper(), model.__class__, model._unknown_elsewhere
            """,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    found = sorted(line.split(": ", 1)[1] for line in private_uses(root))
    assert found == [
        "imports _CHUNK from pkg.model",
        "m._CHUNK (private to pkg.model)",
        "model._need_data (defined in another module)",
    ], found
