"""The shape of the package stays as DESIGN.md says: no import cycle between modules
(function-level imports included), no module over 450 lines, and the lower layers never
import the upper ones."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 450


def modules() -> dict[str, tuple[Path, list[str]]]:
    """Dotted module name -> (file, package parts)."""
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = package = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (type-only imports
    under `if TYPE_CHECKING:` included: they are dependencies too)."""
    mods = modules()
    edges: dict[str, set[str]] = {name: set() for name in mods}
    for name, (path, package) in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                edges[name] |= {t for t in (subs or [target]) if t in mods and t != name}
            elif isinstance(node, ast.Import):
                edges[name] |= {a.name for a in node.names if a.name in mods}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_module_over_450_lines():
    long = {str(p.relative_to(SRC)): n for p, _ in modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_lower_layers_never_import_upper_ones():
    edges = imports()
    rules = {
        "snnbackdoor.registry": ("snnbackdoor.",),
        "snnbackdoor.io": ("snnbackdoor.",),
        "snnbackdoor.errors": ("snnbackdoor.",),
        "snnbackdoor.data": ("snnbackdoor.models", "snnbackdoor.attacks",
                             "snnbackdoor.experiments"),
        "snnbackdoor.models": ("snnbackdoor.attacks", "snnbackdoor.experiments"),
        "snnbackdoor.attacks": ("snnbackdoor.defenses", "snnbackdoor.detectors",
                                "snnbackdoor.experiments", "snnbackdoor.report"),
        "snnbackdoor.report": ("snnbackdoor.experiments",),
    }
    allowed = {"snnbackdoor.errors"}
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in edges.items()
        for layer, banned in rules.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if target not in allowed and target.startswith(banned)
    )
    assert wrong == []
