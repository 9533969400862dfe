"""The project's layout holds: imports flow one way (DESIGN.md, Layout), no circles, files stay small.

Reads the source with `ast` (nothing is imported). An import inside a function counts like one at the top:
a lazy import still ties two modules together; only imports under `if TYPE_CHECKING:` are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("arena", "benchmarks", "bot", "models", "training", "validation", "vlm_labeling")
MAX_LINES = 550  # "no source file much over ~500 lines"
# characters: a few lines; decisions live in docs/notes, figures in benchmarks/RESULTS.md
MAX_DOCSTRING = 1000

# What each part of the project may import from the project (itself is always allowed). bot's subpackages
# in the order they stack; errors and profile are the contracts every subpackage reads.
CONTRACTS = {"bot.errors", "bot.logs", "bot.profile", "validation"}
ALLOWED: dict[str, set[str]] = {
    "validation": set(),
    "arena": {"validation"},
    "models": {"validation"},
    "bot.errors": set(),
    "bot.logs": set(),
    "bot.profile": {"bot.errors", "validation"},
    "bot.perception": CONTRACTS | {"arena"},
    "bot.recordings": CONTRACTS | {"bot.perception", "arena"},
    "bot.policy": CONTRACTS | {"bot.perception", "models"},
    "bot.control": CONTRACTS | {"arena"},
    "bot.games": CONTRACTS | {"bot.perception", "bot.recordings", "bot.policy", "bot.control", "arena"},
    "bot.play": CONTRACTS
    | {"bot.perception", "bot.recordings", "bot.policy", "bot.control", "bot.games", "arena", "models"},
    "training": CONTRACTS | {"bot.perception", "bot.recordings", "bot.policy", "models", "arena"},
    "vlm_labeling": CONTRACTS | {"bot.perception", "bot.recordings", "arena"},
    "benchmarks": CONTRACTS
    | {"arena", "models", "training", "bot.perception", "bot.recordings", "bot.policy", "bot.control"}
    | {"bot.games", "bot.play"},
}
LIVE_INPUT = "bot.control"  # the live input driver: nothing in training or vlm_labeling may reach it


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """module name -> file, for every .py file of the given top-level packages."""
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (they never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and isinstance(test, ast.Name | ast.Attribute):
            name = test.id if isinstance(test, ast.Name) else test.attr
            if name == "TYPE_CHECKING":
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_names(tree: ast.Module) -> Iterator[str]:
    """Every absolute module name an import statement names (with `from a import b`, also `a.b`)."""
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a `from pkg import name` edge goes to pkg.name when that
    is a module, else to pkg)."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = {t for t in imported_names(ast.parse(path.read_text(encoding="utf-8"))) if t in files}
        graph[name] = {t for t in targets if t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def part_of(module: str) -> str:
    """The layer a module belongs to: bot's subpackages and contracts, else its top-level package."""
    parts = module.split(".")
    if parts[0] == "bot" and len(parts) > 1:
        return f"bot.{parts[1]}"
    return parts[0]


def forbidden_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(graph.items()):
        home = part_of(source)
        if home in ("bot", "bot.cli"):  # bot/__init__ holds nothing; the CLI reaches everything, lazily
            continue
        allowed = ALLOWED[home] | {home}
        bad += [f"{source} -> {t}" for t in sorted(targets) if part_of(t) not in allowed and t != "bot"]
    return bad


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from `start`, each with the module that first reached it."""
    seen = {start: ""}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt not in seen:
                seen[nxt] = node
                todo.append(nxt)
    return seen


def path_to(parents: dict[str, str], end: str) -> list[str]:
    chain = [end]
    while parents[chain[-1]]:
        chain.append(parents[chain[-1]])
    return chain[::-1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(source_files(REPO))


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_every_import_flows_down_the_layers(graph: dict[str, set[str]]) -> None:
    assert forbidden_edges(graph) == []


def test_every_module_belongs_to_a_known_layer(graph: dict[str, set[str]]) -> None:
    assert sorted({part_of(m) for m in graph} - set(ALLOWED) - {"bot", "bot.cli"}) == []


def test_training_and_labelling_never_reach_the_live_input_driver(graph: dict[str, set[str]]) -> None:
    reached = []
    for start in sorted(m for m in graph if part_of(m) in ("training", "vlm_labeling")):
        parents = reachable(graph, start)
        reached += [
            " -> ".join(path_to(parents, m)) for m in parents if part_of(m) in (LIVE_INPUT, "bot.play")
        ]
    assert reached == []


def test_no_source_file_is_much_over_500_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in source_files(REPO).values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_module_says_in_a_few_lines_what_it_holds() -> None:
    bad = {}
    for path in source_files(REPO).values():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if not doc.strip() or len(doc) > MAX_DOCSTRING:
            bad[str(path.relative_to(REPO))] = len(doc)
    assert bad == {}


# --------------------------------------------------------------------- the checks above catch what they claim


def _tree(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return import_graph(source_files(root, ("bot", "training", "models")))


def test_a_lazy_circle_is_found_and_a_type_checking_one_is_not(tmp_path: Path) -> None:
    graph = _tree(
        tmp_path,
        {
            "training/a.py": '"""a"""\nfrom training.b import x\n',
            "training/b.py": '"""b"""\ndef f():\n    from training import a\n',
            "training/c.py": (
                '"""c"""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from training.a import y\n'
            ),
            "training/__init__.py": "",
        },
    )
    assert cycles(graph) == [["training.a", "training.b"]]
    assert graph["training.c"] == set()


def test_an_upward_import_and_a_path_to_the_input_driver_are_reported(tmp_path: Path) -> None:
    graph = _tree(
        tmp_path,
        {
            "bot/perception/capture.py": '"""c"""\nfrom bot.play.run import loop\n',
            "bot/play/run.py": '"""r"""\nfrom bot.control import driver\n',
            "bot/control/driver.py": '"""d"""\n',
            "models/layers.py": '"""l"""\nimport bot.perception.capture\n',
            "training/x.py": '"""x"""\nfrom models.layers import thing\n',
        },
    )
    assert forbidden_edges(graph) == [
        "bot.perception.capture -> bot.play.run",
        "models.layers -> bot.perception.capture",
    ]
    parents = reachable(graph, "training.x")
    assert path_to(parents, "bot.control.driver") == [
        "training.x",
        "models.layers",
        "bot.perception.capture",
        "bot.play.run",
        "bot.control.driver",
    ]
