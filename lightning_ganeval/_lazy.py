"""Names loaded on first access, for the package roots (a leaf any layer may import; standard library only).

A package's public names are listed once, as the re-exports of its type stub (``__init__.pyi``): type checkers and
IDEs read the stub (they cannot follow ``__getattr__``), and :func:`stub_exports` reads the same imports at run
time for ``__all__`` and for :func:`lazy_exports`.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def stub_exports(init_file: str, package: str) -> dict[str, str]:
    """Public name -> the module under ``package`` that defines it, from the ``from package.module import name``
    lines of the stub beside ``init_file`` (``__init__.pyi``), in their order; names with a leading underscore
    (``__version__``) are left out."""
    tree = ast.parse(Path(init_file).with_suffix(".pyi").read_text(encoding="utf-8"))
    return {
        alias.asname or alias.name: node.module.removeprefix(f"{package}.")
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{package}.")
        for alias in node.names
        if not alias.name.startswith("_")
    }


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's module-level ``__getattr__`` and ``__dir__`` (PEP 562) for the names in ``exports``.

    A name is imported from its module on first access and then kept in the package's ``namespace``, so that
    importing the package imports none of its modules.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the module under ``package`` that defines it.
        namespace: The package's ``globals()``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
