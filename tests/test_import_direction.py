"""Imports point one way, down this list of layers (DESIGN.md's flow, refined):

plain facts (registry, devices, files, images) -> labels / weights -> segmap -> data -> models ->
fast / losses -> synthesis -> eval -> train -> hub -> pipeline -> cli / demo / nodes.

A module may import only from its own layer or below, and every module has a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS = [
    ("spade_core.registry", "spade_core.devices", "spade_core.files", "spade_core.images"),
    ("spade_core.labels", "spade_core.weights"),
    ("spade_core.segmap",),
    ("spade_core.data",),
    ("spade_core.models",),
    ("spade_core.fast", "spade_core.losses"),
    ("spade_core.synthesis",),
    ("spade_core.eval",),
    ("spade_core.train",),
    ("spade_core.hub",),
    ("spade_core.pipeline",),
    ("spade_core.cli", "spade_core.demo", "spade_nodes"),
]


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
            found += [f"{target}.{alias.name}" for alias in node.names if _layer(f"{target}.{alias.name}") is not None]
    return found


def test_no_module_imports_up_the_chain():
    offenders = []
    for path in sorted([*ROOT.glob("spade_core/**/*.py"), *ROOT.glob("spade_nodes/**/*.py")]):
        module = _module_name(path)
        rank = _layer(module)
        if rank is None or module in ("spade_core",) or module.endswith(".__main__"):
            continue  # a package's __main__ is an entry point (python -m): it stands on top of everything
        for target in _imports(path, module):
            target_rank = _layer(target)
            if target_rank is not None and target_rank > rank:
                offenders.append(f"{module} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_every_module_has_a_layer():
    unplaced = [
        _module_name(path)
        for path in sorted([*ROOT.glob("spade_core/**/*.py"), *ROOT.glob("spade_nodes/**/*.py")])
        if _module_name(path) != "spade_core" and _layer(_module_name(path)) is None
    ]
    assert not unplaced, f"add these modules to LAYERS: {unplaced}"
