"""Imports run one way: clients → protos; server → telemetry → protos; no cycles between modules or subpackages.

Read from the source tree with `ast`, every import counted, at the top of a module or inside a function.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("protos", "server", "telemetry", "clients")
OLD_NAMES = frozenset(FOLDERS)
"""The folders' own names, which exist only in the repository: code imports them as `vigil.<folder>`."""

ALLOWED: dict[str, tuple[str, ...]] = {
    # Each subpackage (or top-level module) and the parts of Vigil it may import, besides itself.
    "vigil": ("vigil.clients",),
    "vigil.protos": (),
    "vigil.clients": ("vigil.protos",),
    "vigil.telemetry.metrics": (),
    "vigil.telemetry.calls": ("vigil.telemetry.metrics",),
    "vigil.telemetry.export": ("vigil.telemetry.calls", "vigil.telemetry.metrics"),
    "vigil.telemetry.stream": ("vigil.telemetry.metrics", "vigil.telemetry.export.wire", "vigil.protos"),
    "vigil.telemetry.quality": ("vigil.telemetry.calls", "vigil.telemetry.metrics", "vigil.telemetry.stream",
                                "vigil.protos"),
    "vigil.telemetry.alerts": ("vigil.telemetry.metrics", "vigil.telemetry.quality", "vigil.telemetry.stream"),
    "vigil.telemetry.history": ("vigil.telemetry.metrics", "vigil.telemetry.quality", "vigil.telemetry.stream",
                                "vigil.telemetry.export"),
    "vigil.server.settings": (),
    "vigil.server.errors": ("vigil.telemetry", "vigil.server.store.records"),
    "vigil.server.store": ("vigil.telemetry.quality",),
    "vigil.server.batching": ("vigil.server.errors", "vigil.protos.tensors"),
    "vigil.server.models": ("vigil.server.batching", "vigil.server.errors", "vigil.telemetry.calls",
                            "vigil.telemetry.quality.reference_profile", "vigil.telemetry.metrics.gpu",
                            "vigil.protos.tensors"),
    "vigil.server.rollouts": ("vigil.server.models", "vigil.server.errors", "vigil.telemetry", "vigil.protos"),
    "vigil.server.inference": ("vigil.server.models", "vigil.server.batching", "vigil.server.rollouts",
                               "vigil.server.store", "vigil.server.errors", "vigil.telemetry",
                               "vigil.protos.tensors"),
    "vigil.server.api": ("vigil.server.inference", "vigil.server.models", "vigil.server.batching",
                         "vigil.server.rollouts", "vigil.server.errors", "vigil.telemetry", "vigil.protos"),
    "vigil.server.security": ("vigil.server.api.handler_wrapping", "vigil.server.errors", "vigil.server.settings",
                              "vigil.telemetry"),
    "vigil.server.web": ("vigil.server.security", "vigil.server.settings", "vigil.telemetry", "vigil.protos"),
    "vigil.server.logs": ("vigil.telemetry",),
    "vigil.server.fleet": ("vigil.server.store", "vigil.server.rollouts", "vigil.telemetry", "vigil.protos"),
    "vigil.server.workers": ("vigil.server.app", "vigil.server.monitoring", "vigil.server.settings",
                             "vigil.server.logs", "vigil.server.store.records", "vigil.server.security",
                             "vigil.server.web", "vigil.server.api.handler_wrapping", "vigil.telemetry",
                             "vigil.protos"),
    # The wiring (`app`, `monitoring`, `__main__`, `cli`): everything of the server's, but never the client.
    "vigil.server": ("vigil.server", "vigil.telemetry", "vigil.protos"),
}
"""Which way imports may run. The longest matching key rules a module; `vigil.server` covers the wiring, which
may import the whole server."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[:2] == ["clients", "root"]:
        parts = parts[2:]
        return ".".join(["vigil", *parts[:-1]]) if parts[-1:] == ["__init__"] else ".".join(["vigil", *parts])
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["vigil", *parts])


@cache
def sources() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts and not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                found[module_name(path)] = path
    return found


def imported_names(path: Path) -> list[str]:
    """Every module `path` imports (a `from m import a` counts as `m.a` when that is a module, else `m`)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [f"{node.module}.{alias.name}" for alias in node.names] or [node.module]
    return names


def resolve(name: str) -> str | None:
    """The source module `name` refers to, or None for anything outside Vigil."""
    while name not in sources() and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in sources() else None


@cache
def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in sources().items():
        for name in imported_names(path):
            target = resolve(name)
            if target is not None and target != module:
                edges[module].add(target)
    return edges


def rule_for(module: str) -> tuple[str, tuple[str, ...]]:
    key = max((k for k in ALLOWED if module == k or module.startswith(k + ".")), key=len)
    return key, ALLOWED[key]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_every_module_has_a_rule() -> None:
    assert sources(), "no sources found"
    unruled = [m for m in sources() if not any(within(m, k) for k in ALLOWED)]
    assert not unruled


def test_imports_run_one_way() -> None:
    broken = []
    for module, targets in graph().items():
        key, allowed = rule_for(module)
        for target in targets:
            if not within(target, key) and not any(within(target, a) for a in allowed):
                broken.append(f"{module} imports {target}")
    assert not broken, "\n".join(sorted(broken))


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("vigil.telemetry", ("vigil.server", "vigil.clients")),
    ("vigil.clients", ("vigil.server", "vigil.telemetry")),
    ("vigil.protos", ("vigil.server", "vigil.telemetry", "vigil.clients")),
])
def test_the_package_boundaries(importer: str, forbidden: tuple[str, ...]) -> None:
    crossing = [f"{m} imports {t}" for m, targets in graph().items() if within(m, importer)
                for t in targets if any(within(t, f) for f in forbidden)]
    assert not crossing


def test_no_module_imports_itself_back() -> None:
    """No cycle of modules: Tarjan's strongly connected components, each of one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph().get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(sources()):
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_no_subpackages_import_each_other() -> None:
    def package(module: str) -> str:
        return ".".join(module.split(".")[:3])

    pairs = {(package(m), package(t)) for m, targets in graph().items() for t in targets}
    mutual = sorted({tuple(sorted(p)) for p in pairs if p[0] != p[1] and (p[1], p[0]) in pairs})
    assert not mutual


def test_nothing_imports_the_folders_by_their_own_names() -> None:
    """Only `vigil.<folder>` is installed; `import server` would work from the repository's root by accident."""
    offenders = []
    for folder in (*FOLDERS, "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in imported_names(path):
                if name.split(".")[0] in OLD_NAMES:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders


def test_every_metric_name_is_written_once() -> None:
    """Metric names live in `vigil.telemetry.metrics.instruments`; everything else refers to its constants."""
    home = ROOT / "telemetry" / "metrics" / "instruments.py"
    names = {node.args[0].value for node in ast.walk(ast.parse(home.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "MetricSpec"
             and isinstance(node.args[0], ast.Constant)}
    assert len(names) > 30
    retyped = [f"{path.relative_to(ROOT)}: {node.value}" for path in sources().values() if path != home
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.Constant) and node.value in names]
    assert not retyped
