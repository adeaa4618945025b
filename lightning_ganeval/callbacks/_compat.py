"""Both Lightning namespaces: ``lightning.pytorch`` and the standalone ``pytorch_lightning`` package.

The callbacks subclass ``lightning.pytorch``'s ``Callback``, which a ``pytorch_lightning.Trainer`` runs just as
well; but classes the callbacks look for among the Trainer's callbacks and loggers (``EarlyStopping``,
``ModelCheckpoint``, ``TensorBoardLogger``, ...) exist once per namespace. ``pytorch_lightning`` is only looked at
when the user's program has imported it, so it is never imported for nothing.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache

__all__ = ["lightning_classes"]

_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")


@cache
def _lookup(namespace: str, module: str, name: str) -> type | None:
    try:
        return getattr(importlib.import_module(f"{namespace}.{module}"), name)
    except (ImportError, AttributeError):
        return None


def lightning_classes(module: str, name: str) -> tuple[type, ...]:
    """``name`` from ``<namespace>.<module>`` for each namespace in use, e.g. ``("callbacks", "EarlyStopping")``."""
    found = []
    for namespace in _NAMESPACES:
        if namespace.split(".")[0] not in sys.modules:
            continue
        cls = _lookup(namespace, module, name)
        if cls is not None:
            found.append(cls)
    return tuple(found)
