"""The house rules of the code's layout, read from the imports themselves (README, Architecture).

Every module of ``sr_cli/`` and ``bench/`` is parsed with ``ast``; every import counts, those
inside functions included, and ``from pkg import name`` points at ``pkg/name.py`` when that is a
module. From the top, the floors are::

    bench      the benchmarks (may use anything)
    commands   sr_cli/commands/: one console command each
    features   study -> {train, evaluate, report, rate}; report -> {evaluate, rate};
               rate -> evaluate;
               train and evaluate use no other feature
    config     sr_cli/config.py: the Hydra config tree and its resolvers
    leaves     losses -> {models, metrics, degradations}; models, metrics, data -> degradations
    ground     every other module directly in sr_cli/ (errors, pixels, serialization, ...)

An import may go down any number of floors, or sideways where the maps above allow it; never up.
No command imports another command (nor, being the floor above them, does anything in
sr_cli/ import one). No file is longer than 600 lines, and no files import each other in a
circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sr_cli", "bench")
MAX_LINES = 600

FLOORS = ("bench", "commands", "features", "config", "leaves", "ground")
#: Feature wing -> the feature wings it may import.
FEATURES: dict[str, set[str]] = {
    "study": {"train", "evaluate", "report", "rate"},
    "report": {"evaluate", "rate"},
    "rate": {"evaluate"},
    "train": set(),
    "evaluate": set(),
}
#: Leaf package -> the leaf packages it may import.
LEAVES: dict[str, set[str]] = {
    "losses": {"models", "metrics", "degradations"},
    "models": {"degradations"},
    "metrics": {"degradations"},
    "data": {"degradations"},
    "degradations": set(),
}


# ---------------------------------------------------------------------------- reading the code
def modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file under the packages."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _target(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (``None``: not ours)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import name``: the submodule pkg.name when there is one, else pkg
            names = [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
            names = [n if n in known else base for n in names] or [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "tests":
                found.add("tests")
            target = _target(name, known)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {m: imports(m, p, known) for m, p in known.items()}


# ---------------------------------------------------------------------------- the rules
def place(module: str) -> tuple[str, str]:
    """``(floor, wing)`` of a module: ``("features", "train")``, ``("ground", "errors")`` ..."""
    parts = module.split(".")
    if parts[0] == "bench":
        return "bench", "bench"
    if len(parts) == 1:  # sr_cli/__init__.py
        return "ground", "sr_cli"
    wing = parts[1]
    if wing == "commands":
        return "commands", ".".join(parts[1:3])
    if wing in FEATURES:
        return "features", wing
    if wing in LEAVES:
        return "leaves", wing
    if wing == "config":
        return "config", wing
    if len(parts) == 2 and not (ROOT / "sr_cli" / wing).is_dir():
        return "ground", wing
    raise AssertionError(
        f"{module} is on no floor: add its package to FEATURES or LEAVES in {Path(__file__).name}"
    )


def rule_broken(a: str, b: str) -> str | None:
    """Why the import ``a -> b`` breaks a rule, or ``None``."""
    if b == "tests":
        return f"{a} imports the tests"
    (floor_a, wing_a), (floor_b, wing_b) = place(a), place(b)
    up = FLOORS.index(floor_b) < FLOORS.index(floor_a)
    if up:
        return f"{a} ({floor_a}) imports {b} ({floor_b}): an import running back up"
    if floor_a != floor_b or wing_a == wing_b:
        return None
    if floor_a == "commands" and b != "sr_cli.commands":
        return f"{a} imports another command, {b}"
    allowed = {"features": FEATURES, "leaves": LEAVES}.get(floor_a)
    if allowed is not None and wing_b not in allowed[wing_a]:
        return (
            f"{a} imports {b}: {wing_a}/ may use {sorted(allowed[wing_a]) or 'no other wing'}, "
            f"not {wing_b}/"
        )
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        why for a, targets in graph.items() for b in targets if (why := rule_broken(a, b))
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (``[a, b, ..., a]``) through each group of files that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for group in groups:
        members = set(group)
        path, seen = [group[0]], {group[0]}
        while True:  # walk inside the group until a file comes round again
            nxt = next(w for w in sorted(graph[path[-1]]) if w in members)
            if nxt in seen:
                found.append([*path[path.index(nxt) :], nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return found


def long_files(root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    return [
        f"{path.relative_to(root)}: {n} lines"
        for path in modules(root).values()
        if (n := len(path.read_text().splitlines())) > limit
    ]


# ---------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_has_a_floor(graph):
    for module in graph:
        place(module)


def test_imports_run_downward_only(graph):
    found = violations(graph)
    assert not found, "\n".join(found)


def test_no_circle_of_files(graph):
    found = circles(graph)
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_no_file_over_600_lines():
    found = long_files()
    assert not found, "\n".join(found)


def test_rate_and_evaluate_need_nothing_from_train(graph):
    for module, targets in graph.items():
        if place(module) in (("features", "rate"), ("features", "evaluate")):
            train = [t for t in targets if place(t) == ("features", "train")]
            assert not train, f"{module} imports {', '.join(train)}"


def test_the_rules_catch_what_they_forbid(tmp_path):
    """The checker itself, on a small made-up tree: an upward import, a command importing a
    command, a forbidden sideways import and a circle are all reported."""
    files = {
        "sr_cli/__init__.py": "",
        "sr_cli/errors.py": "from sr_cli.commands import train\n",  # ground -> commands
        "sr_cli/commands/__init__.py": "",
        "sr_cli/commands/train.py": "def f():\n    from sr_cli.commands.eval import main\n",
        "sr_cli/commands/eval.py": "from sr_cli.evaluate import compare\n",
        "sr_cli/evaluate/__init__.py": "",
        "sr_cli/evaluate/compare.py": "from sr_cli.train.build import x\n",  # evaluate -> train
        "sr_cli/train/__init__.py": "",
        "sr_cli/train/build.py": "from . import stages\n",
        "sr_cli/train/stages.py": "import sr_cli.train.build\n",  # circle
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    g = import_graph(tmp_path, ("sr_cli",))
    found = "\n".join(violations(g))
    assert "sr_cli.errors (ground) imports sr_cli.commands.train (commands)" in found
    assert "sr_cli.commands.train imports another command, sr_cli.commands.eval" in found
    assert "sr_cli.evaluate.compare imports sr_cli.train.build" in found
    assert circles(g) == [["sr_cli.train.build", "sr_cli.train.stages", "sr_cli.train.build"]]
