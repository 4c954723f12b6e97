"""The package's import layers: no circle, and no import from a lower layer to a higher one.

Read with `ast` from the sources (imports inside functions and `TYPE_CHECKING` blocks count too), so the test
sees what a reader sees. Every module must be placed in LAYERS; a module may import modules of its own layer or of
lower ones.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "unic_lift_ns"

LAYERS: List[List[str]] = [
    ["errors", "baselines.__init__", "data.__init__", "export.__init__"],
    ["instance_codes", "collisions", "lazy_lpips", "checkpoints", "flag_ranges", "safe_files", "losses", "clustering", "rasterization",
     "data.label_maps", "synth", "export.ply", "baselines.contrastive_lift_losses", "baselines.gaussian_clustering_losses"],
    ["data.dataset", "data.datamanager", "eval", "export.instances", "trainer", "masks", "corrections", "mask_split"],
    ["models"],
    ["viewer"],
    ["pipeline"],
    ["baselines.clustering_model"],
    ["baselines.contrastive_lift", "baselines.gaussian_clustering"],
    ["cpu_recipe", "runs"],
    ["method_configs"],
    ["comparison"],
    ["scripts"],
]  # fmt: skip
"""Lowest first. An entry names a module or a sub-package (every module below it)."""


def module_names() -> List[str]:
    """Dotted names (without the package) of every module of the package; ``__init__`` files name their package."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest entry that is ``module`` or a package above it; -1 if none. A sub-package's
    own ``__init__`` is named ``<package>.__init__`` (it need not share the layer of the modules below it)."""
    if f"{module}.__init__" in {entry for entries in LAYERS for entry in entries}:
        module = f"{module}.__init__"
    best, best_length = -1, -1
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best_length:
                best, best_length = index, len(entry)
    return best


def package_imports(module: str, known: Set[str]) -> Set[str]:
    """The package modules ``module`` imports (the deepest known module each import names)."""
    path = PACKAGE / (module.replace(".", "/") or "__init__")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = "unic_lift_ns." + ".".join(filter(None, [*base, node.module or ""]))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "unic_lift_ns" or not name.startswith("unic_lift_ns."):
                continue
            target = name[len("unic_lift_ns.") :]
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph() -> Dict[str, Set[str]]:
    modules = module_names()
    known = set(modules)
    return {module: package_imports(module, known) for module in modules if module}


def test_every_module_has_a_layer() -> None:
    assert [m for m in module_names() if m and layer_of(m) < 0] == []


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    graph = import_graph()
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    circles: List[List[str]] = []

    def visit(module: str, path: List[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_walk_reads_absolute_and_relative_imports() -> None:
    """The walk itself: the model's imports (it imported the viewer before the GUI moved to the pipeline) and a
    package's relative import."""
    known = set(module_names())
    model_imports = package_imports("models.unic_lift", known)
    assert {"instance_codes", "models.backbone"} <= model_imports and "viewer" not in model_imports
    assert layer_of("viewer") > layer_of("models.unic_lift") and layer_of("rasterization.torch_backend") == 1
    assert "rasterization.torch_backend" in package_imports("rasterization", known)  # relative import resolved
