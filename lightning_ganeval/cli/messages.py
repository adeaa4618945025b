"""Messages of the command line: one line each, in its own terms (flags, not the library's argument names).

Standard library only.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from lightning_ganeval.metrics.registry import metric_entry, metric_names

__all__ = ["InputError", "one_line_warnings", "translate"]


class InputError(Exception):
    """Bad input or options: reported as one line on stderr, exit status 2."""


# The library names its own arguments (`inception_weights=` of FIDCallback, `subset_size`); on the command line the
# same setting is a flag. Applied to every library message and warning shown here.
_TRANSLATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"`inception_weights=`(?: of [\w /]+?)?(?: or `weights=` of [\w /]+)?(?=[).,;:]|$)", "--inception-weights"),
        (r"`weights=` of DINOv2Extractor", "--dinov2-weights"),
        (r"`weights=` of (?:InceptionExtractor|get_extractor)[\w /]*", "--inception-weights"),
        (r"`?\bsubset_size\b`?=?", "--subset-size"),
        (r"`?\bsubsets\b`?=", "--subsets"),
        (r"`?\bsplits\b`?=", "--splits"),
        (r"\bresize=(['\"])(\w+)\1", r"--resize \2"),
        (r"`?\bresize\b`?=", "--resize"),
        # Every registered metric option: `test_fraction` / `test_fraction=` -> --test-fraction.
        *(
            (rf"`{option.name}`=?|\b{option.name}=(?=\S)", option.flag + " ")
            for option in {o.name: o for name in metric_names() for o in metric_entry(name).options}.values()
        ),
    )
)
MAX_MESSAGE = 400  # characters: a load_state_dict error lists hundreds of keys


def translate(message: str, limit: int | None = None) -> str:
    """A library message in the command line's terms, on one line (cut to ``limit`` characters, if given)."""
    for pattern, replacement in _TRANSLATIONS:
        message = pattern.sub(replacement, message)
    message = " ".join(message.split())
    if limit is not None and len(message) > limit:
        message = message[: limit - 1].rstrip() + "…"
    return message


def one_line_warnings(prefix: str, enabled: bool) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each library warning as one translated line (or nothing)."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if enabled:
            print(f"{prefix}: warning: {translate(str(message))}", file=sys.stderr)

    return show
