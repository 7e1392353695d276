"""The import contract: packages only import downwards, no module imports itself in a cycle,
and imports sit at module top (an import inside a function names its reason: `# lazy: ...`).

`python -m tests.test_layers` prints the package graph (imports inside functions included) and the counts."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "src" / "gandefect", REPO / "serving", REPO / "flows"]

# lowest first: a package may import its own modules and any package of a lower rank
LAYERS = [
    ["gandefect.errors", "gandefect.names"],
    ["gandefect", "gandefect.config", "gandefect.faults", "gandefect.hardware"],
    ["gandefect.data", "gandefect.gan"],
    ["gandefect.detect"],
    ["gandefect.evaluate"],
    ["gandefect.repair"],
    ["gandefect.lifecycle"],
    ["gandefect.stages"],
    ["gandefect.flow_results"],
    ["gandefect.report"],
    ["gandefect.orchestrate"],
    ["gandefect.cli", "serving", "flows"],
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
OWN = ("gandefect", "serving", "flows")
# modules whose functions import lazily by design, with the one reason for all of them (their imports
# are still held to the layers: see test_packages_only_import_downwards)
LAZY_BY_DESIGN = {"gandefect.cli": "each command imports its own stack when it runs, so that --help answers at once"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "src":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str) -> str:
    """`gandefect.x.y` -> `gandefect.x`; `gandefect` and `serving.z` -> their first part (gandefect's root)."""
    parts = module.split(".")
    if parts[0] == "gandefect" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.module == "gandefect":  # `from gandefect import faults` is the module gandefect.faults
        return [f"gandefect.{a.name}" for a in node.names]
    return [node.module or ""]


def scan(inside_too: bool = False) -> tuple[dict[str, set[str]], list[str], list[str]]:
    """(module -> own modules it imports at its top (`inside_too`: and inside its functions),
    in-function imports of own modules and of other modules without a `# lazy:` reason), the
    last two as `file:line: code`."""
    modules = {module_name(p): p for root in SOURCES for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    own_inside, unexplained = [], []
    for name, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        inside = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [t for t in _imported(node) if t.split(".")[0] in OWN]
            where = f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
            if id(node) in inside:
                if "# lazy:" not in lines[node.lineno - 1] and package_of(name) not in LAZY_BY_DESIGN:
                    (own_inside if targets else unexplained).append(where)
                if (
                    not inside_too and package_of(name) not in LAZY_BY_DESIGN
                ):  # a lazy module's edges are its function imports
                    continue
            for t in targets:
                # `import gandefect.x.y` / `from gandefect.x import y`: the deepest module that exists
                while t not in modules and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != name:
                    graph[name].add(t)
    return graph, own_inside, unexplained


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for t in targets:
            if package_of(t) != package_of(module):
                packages[package_of(module)].add(package_of(t))
    return packages


def upward(packages: dict[str, set[str]]) -> list[str]:
    return [f"{p} -> {q}" for p, qs in sorted(packages.items()) for q in sorted(qs) if RANK[q] >= RANK[p]]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer():
    graph, _, _ = scan()
    unknown = {package_of(m) for m in [*graph, *(t for ts in graph.values() for t in ts)]} - set(RANK)
    assert not unknown, f"packages without a layer in tests/test_layers.py: {sorted(unknown)}"


def _stage(module: str) -> str | None:
    """`gandefect.stages.detectors.fit` -> `detectors`: a stage is a module or a package of stages/."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["gandefect", "stages"] and len(parts) > 2 else None


def test_stages_import_no_other_stage():
    """What several stages share lives a layer below (lifecycle.zoo, lifecycle.spliced, ...)."""
    graph, _, _ = scan(inside_too=True)
    across = sorted(
        f"{m} -> {t}" for m, ts in graph.items() for t in ts if _stage(m) and _stage(t) and _stage(m) != _stage(t)
    )
    assert not across, "stages importing another stage:\n" + "\n".join(across)


def test_packages_only_import_downwards():
    graph, _, _ = scan()
    assert upward(package_graph(graph)) == [], (
        "imports against the layers (lowest first: " + " -> ".join("/".join(layer) for layer in LAYERS) + ")"
    )


def test_no_package_or_module_imports_itself_through_others():
    graph, _, _ = scan(inside_too=True)
    assert cycles(package_graph(graph)) == []
    assert cycles(graph) == []


def test_imports_sit_at_module_top():
    _, own_inside, unexplained = scan()
    assert own_inside == [], "gandefect's own modules imported inside functions without a reason (a hidden dependency)"
    assert unexplained == [], "imports inside functions need a one-line reason: `# lazy: ...`"


def test_the_contract_catches_a_cycle_and_an_upward_import():
    graph = {"gandefect.data.x": {"gandefect.repair.y"}, "gandefect.repair.y": {"gandefect.data.x"}}
    assert cycles(graph) == [["gandefect.data.x", "gandefect.repair.y"]]
    assert upward(package_graph(graph)) == ["gandefect.data -> gandefect.repair"]


if __name__ == "__main__":
    graph, own_inside, unexplained = scan(inside_too=True)
    packages = package_graph(graph)
    for p in sorted(packages, key=lambda p: (RANK.get(p, 99), p)):
        print(f"{p} -> {', '.join(sorted(packages[p], key=lambda q: (RANK.get(q, 99), q)))}")
    print(
        f"upward imports: {len(upward(packages))}; package cycles: {len(cycles(packages))}; "
        f"module cycles: {len(cycles(graph))}; "
        f"own modules imported inside functions without a reason: {len(own_inside)}, other modules: {len(unexplained)}"
    )
    for line in [
        *upward(packages),
        *map(" <-> ".join, cycles(packages)),
        *map(" <-> ".join, cycles(graph)),
        *own_inside,
        *unexplained,
    ]:
        print("  " + line)
    sys.exit(1 if upward(packages) or cycles(graph) or own_inside or unexplained else 0)
