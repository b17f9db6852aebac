"""The sub-packages import one another in one direction only (DESIGN 6: model -> activations -> phi ->
partition -> metrics/tracking -> report), read from the source with the standard library's `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "hedonic_neurons"

# Rank of every sub-package (or root module): a module may import from its own rank or below, never above.
# Within a rank the graph must still be acyclic.
RANKS: dict[str, int] = {
    **dict.fromkeys(["game", "parallel", "distributed", "rundir", "configs", "stages", "notices", "runtime", "lazy",
                     "layers", "data", "ir", "valuations"], 0),
    **dict.fromkeys(["partition", "baselines", "models"], 1),
    # metrics score what models/ computes (coalition ablation lives in models.ablate), as DESIGN 6 orders them
    **dict.fromkeys(["metrics", "tracking"], 2),
    "report": 3,
    "experiments": 4,
    "cli": 5,
    "__init__": 6,  # the package facade re-exports everything (lazily)
}


def _unit(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in `path`, function-level ones included."""
    rel = path.relative_to(PKG)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the module's own package
                base = ["hedonic_neurons", *rel.parts[:-1]]
                base = base[: len(base) - (node.level - 1)]
                out.append((".".join(base + ([node.module] if node.module else [])), node.lineno))
            else:
                out.append((node.module or "", node.lineno))
    return out


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{unit: {imported unit: ["file:line", ...]}} over hedonic_neurons, between different units."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        src = _unit(rel)
        graph.setdefault(src, {})
        for mod, line in _imports(path):
            parts = mod.split(".")
            if parts[0] != "hedonic_neurons" or len(parts) < 2 or parts[1] == src:
                continue
            graph[src].setdefault(parts[1], []).append(f"{rel}:{line}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in graph.get(u, {}):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_every_unit_has_a_rank():
    missing = sorted(set(import_graph()) - set(RANKS))
    assert not missing, f"declare the rank of {missing} in RANKS (tests/test_import_graph.py)"


def test_no_upward_import():
    graph = import_graph()
    upward = [f"{a} (rank {RANKS[a]}) -> {b} (rank {RANKS[b]}) at {where[0]}"
              for a, targets in graph.items() for b, where in targets.items()
              if a in RANKS and b in RANKS and RANKS[b] > RANKS[a]]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_finds_cycles():
    # the checker itself: a planted two-cycle and a three-cycle are found, a DAG gives none
    assert _cycles({"a": {"b": []}, "b": {"a": []}}) == [["a", "b", "a"]]
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b": [], "c": []}, "b": {"c": []}, "c": {}}) == []


@pytest.mark.parametrize("heavy", ["torch", "transformers", "peft", "matplotlib", "plotly"])
def test_game_and_solver_import_no_heavy_package(heavy):
    files = [*sorted((PKG / "game").rglob("*.py")), PKG / "partition.py"]
    bad = [f"{p.relative_to(PKG)}:{line}" for p in files for mod, line in _imports(p)
           if mod.split(".")[0] == heavy]
    assert not bad, f"game/ and partition.py must stay numpy/scipy only; {heavy} imported at {bad}"
