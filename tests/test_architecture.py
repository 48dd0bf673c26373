"""kvideo's import graph, read with ast (imports inside functions included): no cycles, no library module
importing a command-line module, and the layers its folders and modules stack into (docs/architecture.md)."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kvideo"
CLI_NAMES = ("cli", "generate_cli", "recipe_cli", "__main__")  # the command-line modules, wherever they sit
COMMAND_LINE = "command line"  # the unit of every command-line module: the top layer
MAX_LAYERS = 9


@functools.lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def resolve(name: str) -> str | None:
    """The kvideo module a dotted import names: itself, or the module that holds the imported name."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package upwards
        package = module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]
        parents = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parents + ([base] if base else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base for alias in node.names]


@functools.lru_cache(maxsize=None)
def graph() -> dict[str, frozenset[str]]:
    """Module -> the kvideo modules it imports anywhere in its file (functions included)."""
    edges = {}
    for module, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {resolve(name) for node in ast.walk(tree) for name in imported_names(module, node)
                   if name.split(".")[0] == "kvideo"}
        edges[module] = frozenset(targets - {None, module})
    return edges


def is_cli(module: str) -> bool:
    return module.rpartition(".")[2] in CLI_NAMES


def unit(module: str) -> str:
    """What a layer holds: the command line, a folder of the package (kvideo.train), or a top-level module."""
    if is_cli(module):
        return COMMAND_LINE
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() and len(parts) == 2 else module


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def unit_graph() -> dict[str, frozenset[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        edges.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    return {name: frozenset(targets) for name, targets in edges.items()}


def layers(edges: dict[str, frozenset[str]]) -> dict[str, int]:
    """Layer of each unit in an acyclic graph: 1 for a unit that imports none, else 1 + the highest it imports."""
    @functools.lru_cache(maxsize=None)
    def layer(node: str) -> int:
        return 1 + max((layer(target) for target in edges[node]), default=0)

    return {node: layer(node) for node in edges}


def test_the_graph_reads_every_module_and_finds_known_arrows():
    assert len(modules()) > 50
    assert "kvideo.models.unet" in graph()["kvideo.train.task"]  # an import inside a function counts
    assert "kvideo.config" in graph()["kvideo.models.unet"]
    assert is_cli("kvideo.train.cli") and is_cli("kvideo.shapes.recipe_cli") and not is_cli("kvideo.shapes.recipe")
    assert unit("kvideo.train.trainer") == "kvideo.train" and unit("kvideo.video_io") == "kvideo.video_io"


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": frozenset("b"), "b": frozenset("ca"), "c": frozenset()}) == [["a", "b"]]
    assert layers({"a": frozenset("b"), "b": frozenset("c"), "c": frozenset()}) == {"a": 3, "b": 2, "c": 1}


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_library_module_imports_a_command_line_module():
    upward = [f"{module} -> {target}" for module, targets in graph().items() if not is_cli(module)
              for target in sorted(targets) if is_cli(target)]
    assert upward == []


def test_the_folders_and_modules_stack_into_at_most_nine_layers():
    """No import from a lower layer up to a higher one (the unit graph is acyclic), and few layers."""
    edges = unit_graph()
    assert cycles(edges) == []
    stacked = layers(edges)
    print("\n".join(f"layer {n}: {', '.join(sorted(u for u in stacked if stacked[u] == n))}"
                    for n in range(1, max(stacked.values()) + 1)))
    assert max(stacked.values()) <= MAX_LAYERS, stacked
