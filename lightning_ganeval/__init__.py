"""Generative-model metrics for PyTorch Lightning training: FID, IS, KID, precision/recall, CMMD, Vendi, PPL and
memorization, as callbacks, from a plain loop (:class:`Evaluator`) or the command line.

The public API is the one list of re-exports in the type stub ``__init__.pyi`` (``__all__``): the callbacks,
the :class:`Evaluator` and its result, the metric units and the bases to write another (:class:`GenerativeMetric`,
:class:`PerSampleMetric`, :class:`RealRequest`, :class:`RealData`), :class:`PixelSpace`, the feature networks, the
statistics files and the weights resolution. Everything else stays importable from its module
(``lightning_ganeval.frechet.frechet_distance``, ``lightning_ganeval.images.to_uint8_rgb``, ...). Names are loaded
on first access, so that the plain-torch parts can be imported without Lightning (only the callbacks need it).
"""

from __future__ import annotations

from lightning_ganeval._lazy import lazy_exports, stub_exports
from lightning_ganeval._version import __version__ as __version__

# The public API, read from the one list in __init__.pyi: name -> the module (under lightning_ganeval) defining it.
_EXPORTS = stub_exports(__file__, __name__)
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
