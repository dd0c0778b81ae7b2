"""The import graph of src/crdetect (every import, at module level or inside functions): its cycles, and the
imports that go up the layers (a lower layer importing a higher one), for issue #27's layout.

    python scripts/import_graph.py [--check]      # --check: exit 1 on a cycle, an upward import or a module
                                                   # over 500 lines
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "crdetect"

#: Layers, lowest first: a module may import its own layer and the ones below, never above.
LAYERS = [
    ["errors", "atomic", "validation", "_optional", "background"],
    ["frame", "preprocessing", "steps", "models", "checkpoint", "pretrained", "io", "metrics", "losses", "masks",
     "device"],
    ["inference", "veto", "cleaning"],
    ["pipeline", "interfaces", "data", "baselines", "training", "evaluation", "viewer", "weights"],
    ["cli", "__main__"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The crdetect modules ``path`` imports."""
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("crdetect"):
                target = node.module[len("crdetect."):] if node.module != "crdetect" else "__init__"
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if candidate in known else target or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("crdetect."):
                    found.add(alias.name[len("crdetect."):])
    # the package's __init__ (its version, lazy public names) runs on any import of crdetect: not an edge
    return {f for f in found if f in known and f != name and f != "__init__"}


def layer(name: str) -> int:
    if name == "__init__":
        return len(LAYERS) - 1
    top = name.split(".")[0]
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise KeyError(f"module {name!r} is in no layer of scripts/import_graph.py")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, result, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in graph:
        if node not in index:
            visit(node)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, name, set(files)) for name, path in files.items()}
    # a package's __init__ re-exports its modules: an import of the package is an import of what it exports
    found_cycles = [c for c in cycles(graph)]
    upward = sorted((a, b) for a, targets in graph.items() for b in targets
                    if a != "__init__" and layer(b) > layer(a))
    for component in found_cycles:
        print("cycle:", " <-> ".join(component))
    for a, b in upward:
        print(f"upward: {a} (layer {layer(a)}) imports {b} (layer {layer(b)})")
    long = sorted((len(p.read_text().splitlines()), n) for n, p in files.items())
    for lines, name in long:
        if lines > 500:
            print(f"long: {name} has {lines} lines")
    print(f"{len(files)} modules, {len(found_cycles)} cycles, {len(upward)} upward imports")
    too_long = [name for lines, name in long if lines > 500]
    return 1 if args.check and (found_cycles or upward or too_long) else 0


if __name__ == "__main__":
    sys.exit(main())
