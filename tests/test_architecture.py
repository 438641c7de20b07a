"""The shape of service/, checked from its source (AST): the transport-neutral core does not
import the HTTP API, and no module imports itself back through a cycle (imports inside
functions count: a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parent.parent / "service"
# The app factory is the composition root: it wires the HTTP API's blueprints into the app.
MAY_IMPORT_THE_API = {"service.app"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SERVICE.rglob("*.py"):
        parts = path.relative_to(SERVICE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue  # Alembic loads these by path
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The service modules ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in MODULES else base)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_nothing_outside_the_api_package_imports_it():
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if not (name == "service.api" or name.startswith("service.api.")) and name not in MAY_IMPORT_THE_API
        for target in targets
        if target == "service.api" or target.startswith("service.api.")
    )
    assert offenders == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def test_service_has_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_noqa_says_why():
    """A suppressed finding (a noqa comment) names its code and, after " - ", why it stands."""
    import re

    root = SERVICE.parent
    bare = re.compile(r"#\s*noqa(?!:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*\s+-\s+\S)", re.IGNORECASE)
    offenders = [f"{path.relative_to(root)}:{number}"
                 for folder in ("service", "tests", "bench", "scripts")
                 for path in (root / folder).rglob("*.py")
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if bare.search(line) and "noqa" in line.split("#", 1)[-1]]
    assert offenders == []


def test_the_readme_architecture_names_every_folder_of_service():
    readme = (SERVICE.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Architecture"):]
    section = section[: section.index("\n## ", 1)]
    folders = sorted(p.name for p in SERVICE.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert [f for f in folders if f"`service/{f}/`" not in section] == []
