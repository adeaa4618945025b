"""Metrics over the shared evaluation pass: one small plain-torch unit each (see ``base.py``), registered by name.

Adding a metric: a subclass of :class:`~lightning_ganeval.metrics.base.GenerativeMetric` in its own file and one
:func:`~lightning_ganeval.metrics.registry.register_metric` call in ``registry.py``; the
:class:`~lightning_ganeval.evaluator.Evaluator` (``Evaluator(["name"], ...)``) and the command line
(``lightning-ganeval name ...``) then know it. Names are loaded on first access, so that the registry (standard
library only) can be read without importing torch.
"""

from __future__ import annotations

from lightning_ganeval._lazy import lazy_exports, stub_exports

# name -> the module (under lightning_ganeval.metrics) defining it, from the one list in __init__.pyi.
_EXPORTS = stub_exports(__file__, __name__)
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
