"""The layering that import-linter's contracts (pyproject.toml) check, seen from the tests.

`lint-imports` says that the core has a cycle and which imports would break it; this test names the
cycle itself, module by module, with the line of each import. Imports inside functions count: a late
import that dodges a cycle at import time is still a cycle in the design. Imports under
`if TYPE_CHECKING:` do not, since they never run.
"""

from __future__ import annotations

import itertools

import grimp

from core.task_keys import TASK_KEYS


def core_graph() -> grimp.ImportGraph:
    return grimp.build_graph("core", exclude_type_checking_imports=True, cache_dir=None)


def find_cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle among the graph's modules (first module repeated at the end), or None."""
    done: set[str] = set()
    for start in sorted(graph.modules):
        if start in done:
            continue
        path, on_path = [start], {start}
        pending = [iter(sorted(graph.find_modules_directly_imported_by(start)))]
        while pending:
            module = next(pending[-1], None)
            if module is None:
                pending.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif module in on_path:
                return [*path[path.index(module) :], module]
            elif module not in done:
                path.append(module)
                on_path.add(module)
                pending.append(iter(sorted(graph.find_modules_directly_imported_by(module))))
    return None


def described(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    steps = []
    for importer, imported in itertools.pairwise(cycle):
        lines = sorted(detail["line_number"] for detail in graph.get_import_details(importer=importer, imported=imported))
        steps.append(f"{importer} -> {imported} (line {', '.join(map(str, lines))})")
    return "; ".join(steps)


def test_no_import_cycle_inside_core():
    graph = core_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in core: {described(graph, cycle)}"


def test_the_cycle_finder_names_a_cycle_with_its_lines():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b", line_number=3, line_contents="from pkg import b")
    graph.add_import(importer="pkg.b", imported="pkg.c", line_number=5, line_contents="from pkg import c")
    assert find_cycle(graph) is None
    graph.add_import(importer="pkg.c", imported="pkg.a", line_number=40, line_contents="from pkg import a")
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    assert described(graph, cycle) == "pkg.a -> pkg.b (line 3); pkg.b -> pkg.c (line 5); pkg.c -> pkg.a (line 40)"


def test_the_task_registry_has_one_task_per_key_the_config_accepts():
    # RunConfig.validate checks a task against core.task_keys so that the config need not import the tasks.
    from core.tasks import TASKS

    assert tuple(TASKS) == TASK_KEYS
