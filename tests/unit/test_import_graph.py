"""The server package's modules import each other without cycles, and never from inside a function
(where an import can hide a cycle). Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import jobpulse_server

ROOT = Path(jobpulse_server.__file__).resolve().parent
PACKAGE = "jobpulse_server"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        if "migrations" in path.relative_to(ROOT).parts:
            continue  # Alembic's environment and revisions are loaded by Alembic, not imported
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _target(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's imports of other modules of the package, and the imports made inside functions."""
    graph: dict[str, set[str]] = {}
    in_functions: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(node, name, is_package)
                found = [c for c in (target, *(f"{target}.{a.name}" for a in node.names)) if c in modules]
                graph[name].update(c for c in found if c != name)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and _target(inner, name, is_package).startswith(
                        PACKAGE
                    ):
                        in_functions.append(f"{name}: {ast.unparse(inner)}")
    return graph, in_functions


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep, [*path, dep])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_server_package_has_no_import_cycle() -> None:
    graph, _ = _imports(_modules())
    assert len(graph) > 30, "the package was not found where expected"
    cycle = _a_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_of_the_server_imports_its_own_package_inside_a_function() -> None:
    _, in_functions = _imports(_modules())
    assert in_functions == []


# What of the store the benchmarks may use: its front door (SqlStore), its key and schema helpers, and the
# modules that hold the SQL the server sends (to time and EXPLAIN exactly that). Never its transaction
# class, drivers or row mapping, which change with the store.
BENCH_MAY_IMPORT = {
    "jobpulse_server.store",
    "jobpulse_server.store.database",
    "jobpulse_server.services.keys",
    "jobpulse_server.store.statements",
    "jobpulse_server.store.batch",
    "jobpulse_server.store.batch.path",
    "jobpulse_server.store.batch.sql",
    "jobpulse_server.store.tables",
}


def test_the_benchmarks_reach_the_store_only_through_its_front_door() -> None:
    bench = ROOT.parents[1] / "bench"
    modules = _modules()
    found: list[str] = []
    for path in sorted(bench.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                # ``from a.b import c``: c is a module of its own, or a name of a.b.
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.append(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target.startswith("jobpulse_server.store") and target not in BENCH_MAY_IMPORT:
                    found.append(f"{path.name}: {target}")
    assert found == [], f"bench/ reaches past the store's front door: {found}"
