"""The import graph of the packages: no cycle, nothing imports the CLI, no layer imports a layer above it.

Every ``import`` statement of a project module is read with ``ast``, at module level and inside functions
alike (a lazy import is still a dependency). ``from X import Y`` where ``X.Y`` is a module counts as importing
``X.Y``; relative imports are resolved against the importing module. A package's ``__init__`` is its own
node (``empirical.report``), distinct from its submodules (``empirical.report.table1``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lls_common", "lls_theory", "simulations", "empirical", "lls_cli")
OUTSIDE = ("scripts", "benchmarks")  # drive the packages from outside; not part of any layer
LAYER = {"lls_common": 0, "lls_theory": 1, "simulations": 2, "empirical": 2, "lls_cli": 3}


def module_name(path: Path) -> str:
    """Dotted module name of a file under ROOT (``empirical/report/__init__.py`` -> ``empirical.report``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the five packages, by dotted name."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def outside_files() -> list[Path]:
    """The scripts and benchmarks: Python files that are not part of the packages."""
    return [p for folder in OUTSIDE for p in sorted((ROOT / folder).rglob("*.py"))]


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """Absolute name of ``from <.level><module> import ...`` written in module ``importer``."""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules that the file at ``path`` (module ``name``) imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # the deepest project module that `target` names (a.b.c -> a.b if a.b.c is a function)
        parts = target.split(".")
        for cut in range(len(parts), 0, -1):
            candidate = ".".join(parts[:cut])
            if candidate in known:
                found.add(candidate)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = (_resolve_relative(name, is_package, node.level, node.module)
                      if node.level else node.module or "")
            add(source)
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    found.add(f"{source}.{alias.name}")
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one is a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(start: str) -> None:
        # iterative DFS: (node, iterator over its successors)
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter[0]
                    counter[0] += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}

    def walk(node: str) -> bool:
        for succ in sorted(graph[node] & members):
            if succ == start:
                return True
            if succ not in seen:
                seen.add(succ)
                path.append(succ)
                if walk(succ):
                    return True
                path.pop()
        return False

    walk(start)
    return path + [start]


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "lls_common.errors" in graph["lls_common.validate"]
    # an import inside a function body is an edge like any other
    assert "empirical.engine.models" in graph["empirical.stages.build"]
    assert "empirical.report" in graph and "empirical.report.table1" in graph


def test_relative_imports_and_submodule_names_resolve(tmp_path):
    assert _resolve_relative("empirical.report.table1", False, 1, "paper") == "empirical.report.paper"
    assert _resolve_relative("empirical.report", True, 1, "table1") == "empirical.report.table1"
    assert _resolve_relative("empirical.report.table1", False, 2, "config") == "empirical.config"
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from . import table1\n    from .paper import TABLE1\n"
                 "    import empirical.stages.train\nfrom empirical.engine import models\n")
    known = {"empirical", "empirical.report", "empirical.report.table1", "empirical.report.paper",
             "empirical.stages", "empirical.stages.train", "empirical.engine", "empirical.engine.models"}
    assert imports_of(f, "empirical.report.x", known) == {"empirical.report", "empirical.report.table1",
                                                          "empirical.report.paper", "empirical.stages.train",
                                                          "empirical.engine", "empirical.engine.models"}


def test_strongly_connected_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert _cycle_in(["a", "b", "c"], graph) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = import_graph()
    cycles = [" -> ".join(_cycle_in(c, graph)) + f"  (component: {', '.join(c)})"
              for c in strongly_connected(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_nothing_outside_the_cli_imports_it():
    modules = project_modules()
    known = set(modules)
    offenders = [f"{name} imports {target}"
                 for name, path in modules.items() if not name.startswith("lls_cli")
                 for target in sorted(imports_of(path, name, known)) if target.split(".")[0] == "lls_cli"]
    for path in outside_files():
        name = module_name(path)
        offenders += [f"{path.relative_to(ROOT)} imports {target}"
                      for target in sorted(imports_of(path, name, known)) if target.split(".")[0] == "lls_cli"]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_layer_imports_a_layer_above_it(package):
    graph = import_graph()
    upward = [f"{name} imports {target}"
              for name, targets in graph.items() if name.split(".")[0] == package
              for target in sorted(targets)
              if LAYER[target.split(".")[0]] > LAYER[package]
              or (LAYER[target.split(".")[0]] == LAYER[package] and target.split(".")[0] != package)]
    assert not upward, f"{package} (layer {LAYER[package]}) imports upward:\n" + "\n".join(upward)


def test_settings_import_no_stage():
    """``empirical.config`` is the bottom of ``empirical``: besides ``lls_common`` it reads only the modules its
    checks name (language codes, the prompt library and the text rules under it), never a stage."""
    graph = import_graph()
    ground = {"empirical.language", "empirical.systems", "empirical.systems.families", "empirical.text"}
    stages = sorted(t for t in graph["empirical.config"] if t.startswith("empirical") and t not in ground)
    assert not stages, f"empirical.config imports stages: {stages}"
    below = set()
    for module in ground:
        below |= {t for t in graph[module] if t.startswith("empirical")}
    assert below <= ground, f"the modules under empirical.config import {sorted(below - ground)}"


#: Inside ``empirical``: the part each module belongs to, and the parts each part may import besides itself (the
#: ``May import:`` line of the part's docstring says the same; "ground" = the modules every part may read).
GROUND = ("empirical", "empirical.config", "empirical.text", "empirical.language", "empirical.systems")
SUBPACKAGES = ("engine", "metrics", "stages", "lowrank", "report", "orchestration")
ALLOWED = {
    "ground": {"lls_common"},
    "engine": {"lls_common", "lls_theory"},
    "metrics": {"lls_common", "lls_theory", "ground", "engine"},
    "stages": {"lls_common", "lls_theory", "ground", "engine", "metrics"},
    "lowrank": {"lls_common", "lls_theory", "ground", "engine", "stages"},
    "report": {"lls_common", "lls_theory", "ground", "metrics"},
    "orchestration": {"lls_common", "lls_theory", "ground", "engine", "metrics", "stages", "report"},
    "build_notebook": {"lls_common"},
}


def part_of(module: str) -> str:
    """The part of the project a module belongs to: a top package other than ``empirical`` (``lls_common``), or
    inside ``empirical`` one of SUBPACKAGES, "ground" (GROUND and what is under it) or "build_notebook"."""
    parts = module.split(".")
    if parts[0] != "empirical":
        return parts[0]
    if len(parts) > 1 and parts[1] in SUBPACKAGES + ("build_notebook",):
        return parts[1]
    if any(module == g or module.startswith(g + ".") for g in GROUND[1:]) or module == "empirical":
        return "ground"
    raise AssertionError(f"{module} belongs to no part of empirical: add it to a subpackage or to GROUND")


def _docstring_allowed(part: str) -> set[str]:
    """The parts named by the ``May import:`` sentence that ends a subpackage's docstring (``empirical.x`` -> x)."""
    doc = ast.get_docstring(ast.parse((ROOT / "empirical" / part / "__init__.py").read_text(encoding="utf-8")))
    assert doc, f"empirical/{part}/__init__.py has no docstring"
    text = " ".join(doc.split())
    assert "May import: " in text, f"empirical/{part}/__init__.py's docstring has no 'May import:' sentence"
    sentence = text.split("May import: ", 1)[1].split(". ", 1)[0].rstrip(".")
    return {name.strip().removeprefix("empirical.") for name in sentence.split(",")}


def forbidden_imports(graph: dict[str, set[str]], part: str) -> list[str]:
    """The imports of the ``empirical`` modules in ``part`` that ALLOWED does not grant it."""
    return [f"{name} imports {target} (part {part_of(target)})"
            for name, targets in sorted(graph.items())
            if name.split(".")[0] == "empirical" and part_of(name) == part
            for target in sorted(targets) if part_of(target) not in ALLOWED[part] | {part}]


def test_every_empirical_module_belongs_to_a_part():
    parts = {part_of(name) for name in project_modules() if name.split(".")[0] == "empirical"}
    assert parts == set(ALLOWED)


@pytest.mark.parametrize("part", SUBPACKAGES)
def test_subpackage_docstring_states_its_allowed_imports(part):
    assert _docstring_allowed(part) == ALLOWED[part]


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_empirical_parts_import_only_what_they_may(part):
    offenders = forbidden_imports(import_graph(), part)
    assert not offenders, f"empirical part {part!r} may import only {sorted(ALLOWED[part])}:\n" + "\n".join(offenders)


def test_the_part_check_catches_a_forbidden_import():
    graph = {"empirical.engine.models": {"empirical.engine.threads", "empirical.stages.data", "lls_common.errors"},
             "empirical.stages.data": {"empirical.engine.models", "empirical.config", "empirical.systems.families"},
             "empirical.config": {"empirical.orchestration.experiment"}}
    assert forbidden_imports(graph, "engine") == ["empirical.engine.models imports empirical.stages.data (part stages)"]
    assert forbidden_imports(graph, "stages") == []
    assert forbidden_imports(graph, "ground") == [
        "empirical.config imports empirical.orchestration.experiment (part orchestration)"]
    assert part_of("empirical.systems.families") == part_of("empirical") == "ground"
    with pytest.raises(AssertionError, match="belongs to no part"):
        part_of("empirical.newthing")
