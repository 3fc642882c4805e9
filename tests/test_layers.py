"""The packages import one another one way only, with no import cycle, and only serving/ speaks HTTP.

Read from the source's own import statements (those inside functions too), so a new import that breaks
the layering fails here before it makes two packages depend on each other.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top: a package may import those on lower levels (and itself), never one on its own level or above.
# The app (serving) and the trainer (finetune) share a level, so neither imports the other: what both need sits in
# runtime, and only the CLI wires them together.
LEVELS = {"core": 0, "conversations": 1, "bot": 1, "runtime": 2, "finetune": 3, "serving": 3, "cli": 4}
HTTP = ("fastapi", "starlette")


def modules() -> dict[str, Path]:
    """Every product module by dotted name; the domain packs are data, not code of the product."""
    found = {}
    for package in LEVELS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "packs" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imported(path: Path) -> set[str]:
    """Dotted names this file imports; `from package import name` counts as `package.name`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {target for target in imported(path) if target in known and target != name}
            for name, path in known.items()}  # fmt: skip


def test_no_package_imports_one_on_its_level_or_above() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        for target in targets
        if (own := name.split(".")[0]) != (other := target.split(".")[0]) and LEVELS[other] >= LEVELS[own]
    ]
    assert wrong == []


def test_no_module_import_cycle() -> None:
    edges = graph()
    # A package imports its own modules through __init__ re-exports; that is not a cycle between modules.
    edges = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in edges.items()}
    cycles, state = [], {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_only_serving_speaks_http() -> None:
    speaking = [
        name
        for name, path in modules().items()
        if not name.startswith("serving") and any(target.split(".")[0] in HTTP for target in imported(path))
    ]
    assert speaking == []


def test_the_app_loads_without_the_trainer() -> None:
    # What the layering above cannot see: a module of a lower package that pulls the trainer in at import time,
    # directly or through a third-party import. The app image installs neither the trainer's packages (the `train`
    # extra) nor needs finetune/ to start.
    trainer = ("finetune", "trl", "peft", "gguf", "datasets")
    script = (
        "import sys, serving.app, serving.services\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({trainer!r})))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"
