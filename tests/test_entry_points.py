"""Every entry point the package declares resolves to what it names and to what is registered
(as spaCy's ``tests/test_factory_registrations.py`` checks its factories), and the command line
and the library behind it import without circles or private names."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

import pytest
from spacy.util import registry

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spacy_crf_ner"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf8"))

# entry-point group -> the spaCy/Thinc registry it fills
REGISTRIES = {
    "spacy_factories": "factories",
    "spacy_architectures": "architectures",
    "thinc_layers": "layers",
    "spacy_callbacks": "callbacks",
    "spacy_scorers": "scorers",
    "spacy_readers": "readers",
    "spacy_batchers": "batchers",
    "spacy_augmenters": "augmenters",
}
DECLARED = [
    (group, name, value)
    for group, points in PYPROJECT["project"]["entry-points"].items()
    for name, value in points.items()
]
SCRIPTS = list(PYPROJECT["project"]["scripts"].items())

# The command line and the library functions behind it.
CLI_MODULES = {
    "spacy_crf_ner.cli",
    "spacy_crf_ner.cli._util",
    "spacy_crf_ner.cli.annotate",
    "spacy_crf_ner.cli.calibrate",
    "spacy_crf_ner.cli.convert",
    "spacy_crf_ner.cli.evaluate",
    "spacy_crf_ner.cli.predict",
    "spacy_crf_ner.cli.rank",
    "spacy_crf_ner.cli.render",
    "spacy_crf_ner.cli.train",
    "spacy_crf_ner.annotate",
    "spacy_crf_ner.calibrate",
    "spacy_crf_ner.convert",
    "spacy_crf_ner.distributed",
    "spacy_crf_ner.evaluate",
    "spacy_crf_ner.formats",
    "spacy_crf_ner.loaders",
    "spacy_crf_ner.rank",
}


def test_every_group_is_known() -> None:
    assert {group for group, _, _ in DECLARED} <= set(REGISTRIES)
    assert SCRIPTS, "no [project.scripts]"


@pytest.mark.parametrize(("group", "name", "value"), DECLARED)
def test_entry_point_resolves_to_the_registered_object(group: str, name: str, value: str) -> None:
    target = importlib.metadata.EntryPoint(name, value, group).load()
    assert getattr(registry, REGISTRIES[group]).get(name) is target


@pytest.mark.parametrize(("group", "name", "value"), DECLARED)
def test_entry_point_is_installed_as_declared(group: str, name: str, value: str) -> None:
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=group)}
    assert installed.get(name) == value, "stale install: run pip install -e . again"


@pytest.mark.parametrize(("name", "value"), SCRIPTS)
def test_console_script_resolves(name: str, value: str) -> None:
    from spacy_crf_ner.cli import main

    assert importlib.metadata.EntryPoint(name, value, "console_scripts").load() is main
    installed = {
        ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
    }
    assert installed.get(name) == value, "stale install: run pip install -e . again"


def module_imports() -> dict[str, set[tuple[str, str]]]:
    """Module -> {(imported module, imported name or "")} within the package, including
    imports inside functions."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    graph: dict[str, set[tuple[str, str]]] = {}
    for module, path in files.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        edges: set[tuple[str, str]] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    if f"{target}.{alias.name}" in files:
                        edges.add((f"{target}.{alias.name}", ""))
                    elif target in files:
                        edges.add((target, alias.name))
            elif isinstance(node, ast.Import):
                edges.update((alias.name, "") for alias in node.names if alias.name in files)
        graph[module] = {(m, n) for m, n in edges if m != module}
    return graph


def test_no_import_circle_through_the_cli_or_its_library() -> None:
    graph = {m: {t for t, _ in edges} for m, edges in module_imports().items()}
    assert CLI_MODULES <= set(graph)
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                circles.append(path[path.index(target) :] + [target])
            elif len(path) < len(graph):
                visit(target, [*path, target])

    for module in sorted(CLI_MODULES):
        visit(module, [module])
    # Circles through the CLI and its library (others are outside this check's scope). The
    # command modules import ``._util``, never their package, so the package importing them
    # (which is how they register) closes no circle.
    circles = [c for c in circles if CLI_MODULES.intersection(c)]
    assert circles == []


def test_no_private_name_crosses_a_cli_module_boundary() -> None:
    crossings = [
        f"{module} imports {name} from {target}"
        for module, edges in module_imports().items()
        for target, name in edges
        if name.startswith("_") and (module in CLI_MODULES or target in CLI_MODULES)
    ]
    assert crossings == []


def test_the_library_never_imports_typer() -> None:
    for module in CLI_MODULES - {m for m in CLI_MODULES if m.startswith("spacy_crf_ner.cli")}:
        path = PACKAGE / f"{module.split('.')[-1]}.py"
        tree = ast.parse(path.read_text(encoding="utf8"))
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(
            n == "typer" or n.startswith(("typer.", "spacy_crf_ner.cli")) for n in names
        ), module
        assert not any(
            isinstance(node, ast.ImportFrom)
            and node.level
            and (node.module or "").startswith("cli")
            for node in ast.walk(tree)
        ), module
