"""The house rules as a test: imports point down only (DESIGN.md, "The house").

    pytest -q tests/test_layering.py

Floors, top to bottom: ``runners`` (where and how it runs), ``pipelines`` (the graph),
``transforms`` (the rules), ``schemas`` (the contracts). Imports are read with ``ast`` from every
module of the four packages, function-local imports included (a cycle hidden inside a function
is still a cycle). The rules:

- a domain (``transforms/<domain>/``) imports only ``transforms.common``, ``schemas`` and itself;
  ``transforms.common`` imports only ``schemas`` and itself;
- inside ``transforms/``, only ``transform.py`` files and ``common/`` import ``apache_beam``;
- ``pipelines`` imports only ``transforms``, ``schemas`` and itself; ``schemas`` only itself;
- nothing outside ``runners`` imports ``runners``;
- no import cycles between project modules;
- a function-local import of a project module says why on its line (``# lazy: ...``): it is
  allowed only to keep a heavy dependency (Beam, the GCP clients, pandas) off a light path.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("runners", "pipelines", "transforms", "schemas")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported project module (or symbol's module)
    line: int
    local: bool  # inside a function
    comment: str  # the comments on the import's lines, if any


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path, modules: set[str]) -> list[Import]:
    """Project imports of one file; ``from pkg import mod`` counts as an import of ``pkg.mod``."""
    module = module_name(path, root)
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    local_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, path.name == "__init__.py")
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            continue
        span = lines[node.lineno - 1 : node.end_lineno]
        comment = " ".join(line.split("#", 1)[1].strip() for line in span if "#" in line)
        for target in targets:
            if target.split(".")[0] in PACKAGES or target.split(".")[0] == "apache_beam":
                out.append(Import(module, target, node.lineno, id(node) in local_nodes, comment))
    return out


@cache  # parsed once per test session: every test reads the same tree
def project(root: Path = ROOT) -> tuple[dict[str, Path], list[Import]]:
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    modules = set(files)
    found = [i for p in files.values() for i in imports_of(p, root, modules)]
    return files, found


def domain_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "transforms" and len(parts) > 2 else None


def violations(files: dict[str, Path], found: list[Import]) -> list[str]:
    """Every broken house rule, one line each (empty when the house is in order)."""
    bad = []
    for i in found:
        where = f"{files[i.module].name}:{i.line} ({i.module})"
        src_top, dst_top = i.module.split(".")[0], i.target.split(".")[0]
        if dst_top == "apache_beam":
            if src_top == "transforms" and not (
                i.module.endswith(".transform") or domain_of(i.module) == "common"
            ):
                bad.append(
                    f"{where}: {i.module} imports apache_beam (only transform.py and common/)"
                )
            continue
        if dst_top == "runners" and src_top != "runners":
            bad.append(f"{where}: {i.module} imports {i.target} (nothing imports runners/)")
        if src_top == "pipelines" and dst_top not in ("pipelines", "transforms", "schemas"):
            bad.append(f"{where}: {i.module} imports {i.target} (pipelines/: transforms, schemas)")
        if src_top == "schemas" and dst_top != "schemas":
            bad.append(f"{where}: {i.module} imports {i.target} (schemas/ imports only itself)")
        if src_top == "transforms" and dst_top not in ("transforms", "schemas"):
            bad.append(f"{where}: {i.module} imports {i.target} (transforms/: common, schemas)")
        src_dom, dst_dom = domain_of(i.module), domain_of(i.target)
        if src_top == "transforms" and dst_top == "transforms" and i.target != "transforms":
            allowed = {"common"} if src_dom == "common" else {"common", src_dom}
            if dst_dom not in allowed:
                bad.append(
                    f"{where}: {i.module} imports {i.target} (a domain imports only "
                    "transforms.common, schemas and itself)"
                )
        if i.local and not i.comment.startswith("lazy:"):
            bad.append(
                f"{where}: function-local import of {i.target} without a '# lazy: <reason>' comment"
            )
    graph: dict[str, set[str]] = {m: set() for m in files}
    for i in found:
        target = i.target
        while target and target not in files:  # a symbol's module
            target = target.rpartition(".")[0]
        if target and target != i.module and not i.module.startswith(target + "."):
            graph[i.module].add(target)
    bad += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_house_rules_hold():
    files, found = project()
    assert violations(files, found) == []


def test_every_project_module_is_seen():
    files, found = project()
    assert {
        "runners.cli",
        "pipelines.graph",
        "transforms.margin.engine",
        "schemas.registry",
    } <= set(files)
    assert any(i.target == "apache_beam" for i in found)


@pytest.mark.parametrize(
    ("path", "code", "expected"),
    [
        # a domain reaching into another domain
        (
            "transforms/margin/health.py",
            "from transforms.var.engine import VarConfig\n",
            "a domain imports only transforms.common",
        ),
        # Beam in a pure module
        ("transforms/var/measures.py", "import apache_beam as beam\n", "imports apache_beam"),
        # the graph reaching up into a run mode
        ("pipelines/graph.py", "from runners.direct import local_pipeline_options\n", "runners/"),
        # a contract importing a rule
        ("schemas/tables.py", "from transforms.common.keys import shard_of\n", "schemas/"),
        # a hidden function-local import
        (
            "runners/local/run.py",
            "def f():\n    from runners.local.warehouse import build_warehouse\n",
            "without a '# lazy: <reason>' comment",
        ),
        # a cycle inside one domain (the engine imports health)
        (
            "transforms/margin/health.py",
            "from transforms.margin.engine import MarginConfig\n",
            "import cycle",
        ),
    ],
)
def test_a_wrong_import_fails(tmp_path, path, code, expected):
    """The rules catch each kind of wrong arrow, on a copy of the tree with one import added."""
    files, found = project()
    target = ROOT / path
    copy = tmp_path / path
    copy.parent.mkdir(parents=True)
    copy.write_text(target.read_text() + "\n" + code)
    module = module_name(target, ROOT)
    broken = [i for i in found if i.module != module]
    broken += imports_of(copy, tmp_path, set(files))
    files = {**files, module: copy}
    assert any(expected in v for v in violations(files, broken)), violations(files, broken)
