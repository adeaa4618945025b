"""One state key per metric callback in a Trainer, refused with a message that names ``name=``.

Lightning refuses two stateful callbacks with one ``state_key`` while it builds the Trainer, before any hook of ours
runs, with "Found more than one stateful callback of type `FIDCallback`", which says neither what the key is made
of nor that ``name=`` changes it. Our check runs first: wrapped around Lightning's own list check (a private
function, so a Lightning without it is left as it is), and again in ``setup`` for callbacks that reach the Trainer
another way (``configure_callbacks``, a list edited after the Trainer was built).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["check_state_keys", "install_trainer_check"]

_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")
_CONNECTOR = "trainer.connectors.callback_connector"
_VALIDATE = "_validate_callbacks_list"


def check_state_keys(callbacks: Iterable[Any]) -> None:
    """Raise if two entries of ``callbacks`` are metric callbacks with the same ``state_key``.

    Raises:
        RuntimeError: (Lightning's type for this error) naming the callbacks and the ``name=`` that tells them
            apart, or saying that one instance is listed twice.
    """
    from lightning_ganeval.callbacks.base import _GenerativeMetricCallback

    ours = [c for c in callbacks if isinstance(c, _GenerativeMetricCallback)]
    seen: dict[str, Any] = {}
    for callback in ours:
        key = callback.state_key
        first = seen.setdefault(key, callback)
        twice = first is callback and sum(c is callback for c in ours) > 1
        if first is callback and not twice:
            continue
        cls = type(callback).__name__
        if twice:
            raise RuntimeError(
                f"`{cls}(name={callback.name!r})` is listed twice in the Trainer's callbacks. List it once; for a"
                f" second `{callback.name}` with other settings, add another instance with its own `name=`, e.g."
                f" `{cls}(name={callback.name + '_2'!r}, ...)` (it prefixes the logged keys and keys the"
                " checkpointed state)."
            )
        raise RuntimeError(
            f"Two `{cls}` callbacks have name={callback.name!r}, so they would log the same keys and share one"
            f" checkpoint entry (`state_key` {key!r}). Give each its own `name=`, e.g."
            f" `{cls}(name={callback.name + '_2'!r}, ...)`."
        )


def install_trainer_check() -> None:
    """Run :func:`check_state_keys` before Lightning's callback-list check, in each namespace in use (idempotent)."""
    for namespace in _NAMESPACES:
        if namespace.split(".")[0] not in sys.modules:
            continue  # never import pytorch_lightning for nothing
        try:
            module = importlib.import_module(f"{namespace}.{_CONNECTOR}")
        except ImportError:
            continue
        original = getattr(module, _VALIDATE, None)
        if not callable(original) or getattr(original, "_lightning_ganeval", False):
            continue  # another Lightning layout (Lightning's own check and our setup check remain), or done
        setattr(module, _VALIDATE, _checked(original))


def _checked(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def validate(callbacks: list[Any], *args: Any, **kwargs: Any) -> Any:
        check_state_keys(callbacks)
        return original(callbacks, *args, **kwargs)

    validate._lightning_ganeval = True  # type: ignore[attr-defined]
    return validate
