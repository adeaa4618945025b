"""Names loaded on first access, for the package roots (a leaf any layer may import; standard library only)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


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
