"""Data flows one way: only the ``callbacks`` package may import Lightning at run time."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_ganeval"
LIGHTNING_ROOTS = {"lightning", "pytorch_lightning"}
# Modules that must stay usable without Lightning: plain torch (+ numpy, torchmetrics, torch-fidelity, timm).
PLAIN_MODULES = [
    "weights",
    "pixel_space",
    "images",
    "feature_network",
    "inception",
    "dinov2",
    "clip",
    "accumulators",
    "frechet",
    "inception_score_math",
    "stats_files",
    "real_images",
    "sampling",
    "metrics",
    "metrics.base",
    "metrics.fid",
    "metrics.inception_score",
    "metrics.kid",
    "metrics.precision_recall",
    "metrics.extrapolation",
    "metrics.cmmd",
    "metrics.vendi",
    "metrics.ppl",
    "lpips",
    "networks",
    "real_cache",
    "real_pass",
    "evaluator",
    "testing",
    "distributed",
    "metrics.registry",
    "cli",
    "cli.folders",
    "cli.arguments",
    "cli.setup",
    "cli.commands",
    "cli.program",
]
# Within the package, a module may only import modules that come before it in the data flow (by top-level name:
# a module of the `metrics` package may import `metrics.*`).
ALLOWED_INTERNAL = {
    "distributed": set(),
    "weights": set(),
    "pixel_space": set(),
    "images": {"pixel_space"},
    "frechet": set(),
    "inception_score_math": {"frechet"},
    "testing": {"weights"},
    "feature_network": {"weights"},
    "inception": {"weights", "feature_network"},
    "dinov2": {"weights", "feature_network"},
    "clip": {"weights", "feature_network"},
    "accumulators": {"distributed", "frechet", "inception_score_math"},
    "sampling": {"images", "pixel_space"},
    "stats_files": {"frechet", "feature_network"},
    "real_images": set(),
    "metrics": {
        "frechet",
        "inception_score_math",
        "accumulators",
        "distributed",
        "metrics",
        "lpips",
        "images",
        "pixel_space",
        "sampling",
    },
    "lpips": {"weights"},
    "networks": {"feature_network", "inception"},
    "real_cache": {
        "feature_network",
        "frechet",
        "images",
        "networks",
        "pixel_space",
        "real_images",
        "stats_files",
        "sampling",
    },
    "real_pass": {
        "distributed",
        "feature_network",
        "inception",
        "images",
        "pixel_space",
        "frechet",
        "metrics",
        "accumulators",
        "networks",
        "stats_files",
        "real_images",
        "sampling",
        "real_cache",
    },
    "evaluator": {
        "distributed",
        "images",
        "pixel_space",
        "metrics",
        "networks",
        "real_images",
        "real_pass",
        "sampling",
    },
    "cli": {
        # The command line is a client: the registry (to build its parser), the Evaluator and the real pass (to
        # run a command), the networks and statistics files (to set one up). Its own modules are `cli.*`.
        "cli",
        "clip",
        "dinov2",
        "distributed",
        "evaluator",
        "frechet",
        "images",
        "pixel_space",
        "inception",
        "metrics",
        "networks",
        "real_images",
        "real_pass",
        "stats_files",
        "weights",
        "feature_network",
    },
}


def _module_files(module: str) -> list[Path]:
    path = PACKAGE / f"{module}.py"
    if path.exists():
        return [path]
    folder = PACKAGE / module
    return sorted(folder.glob("*.py")) if folder.is_dir() else []


def _module_level_imports(path: Path) -> set[str]:
    """Top-level module names imported outside ``if TYPE_CHECKING:`` blocks (function bodies included)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("lightning_ganeval." + (node.module or ""))
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(ALLOWED_INTERNAL))
def test_import_table(module: str) -> None:
    files = _module_files(module)
    if not files:
        pytest.fail(f"lightning_ganeval/{module} is missing")
    for path in files:
        imports = _module_level_imports(path)
        lightning = {name for name in imports if name.split(".")[0] in LIGHTNING_ROOTS}
        assert not lightning, f"{path.name} imports Lightning outside TYPE_CHECKING: {sorted(lightning)}"
        internal = {
            name.split(".")[1] for name in imports if name.startswith("lightning_ganeval.") and name.count(".") >= 1
        }
        internal.discard("")
        internal -= {"_version", "_lazy"}  # leaves (the version, the lazy exports), importable from any layer
        assert "lightning_ganeval" not in imports, (
            f"{path.relative_to(PACKAGE)} imports the package root, which imports every layer (callbacks included):"
            " import the defining module instead"
        )
        assert internal <= ALLOWED_INTERNAL[module], (
            f"{path.relative_to(PACKAGE)} imports {sorted(internal - ALLOWED_INTERNAL[module])}, against the one-way"
            " data flow"
        )


def test_every_module_is_in_the_table() -> None:
    top_level = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    assert top_level - {"callbacks", "__main__", "_version", "_lazy"} <= set(ALLOWED_INTERNAL), sorted(
        top_level - set(ALLOWED_INTERNAL)
    )


def test_plain_modules_load_without_lightning() -> None:
    code = (
        "import sys\n"
        + "".join(f"import lightning_ganeval.{name}\n" for name in PLAIN_MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'lightning', 'pytorch_lightning'})\n"
        + "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("package", ["lightning_ganeval", "lightning_ganeval.metrics"])
def test_public_api_is_the_one_list_of_the_type_stub(package: str) -> None:
    # The stub's re-exports are the public API: type checkers read them instead of `__getattr__`, and the package
    # builds `__all__` and its lazy names from the same lines, so the two cannot drift apart.
    root = importlib.import_module(package)
    stub = Path(root.__file__).with_suffix(".pyi")
    tree = ast.parse(stub.read_text())
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert all(node.module and node.module.startswith(f"{package}.") for node in imports)
    assert all(alias.asname == alias.name for node in imports for alias in node.names)  # re-exported, PEP 484
    listed = [alias.name for node in imports for alias in node.names if not alias.name.startswith("_")]
    assert root.__all__ == listed
    for node in imports:
        for alias in node.names:
            assert getattr(root, alias.name) is getattr(importlib.import_module(node.module), alias.name)
    # The stub holds nothing but its docstring and the re-exports.
    assert [node for node in tree.body if not isinstance(node, ast.ImportFrom | ast.Expr)] == []
    assert set(root.__all__) <= set(dir(root))
    with pytest.raises(AttributeError, match=f"^module '{package}' has no attribute 'nothing_here'$"):
        root.nothing_here  # noqa: B018
