"""Group keys for user functions (``sample_fn``): equivalent functions share one generator and network pass.

Callbacks with equal sampling settings share one evaluation pass, and ``sample_fn`` is one of those settings. Compared
by identity, one ``lambda pl_module, z: pl_module.generator(z)`` written per callback forms one group per callback,
and every evaluation runs the generator and Inception once per callback, for identical values. Two functions that
provably compute the same thing get the same key here: the same bytecode, constants and names, the same module
globals, equal defaults and the same captured objects (closure cells). Anything else (a callable object, a builtin)
keeps its identity; :func:`provable` says which keys are of that kind, so the callbacks can warn with the fix.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Hashable
from typing import Any

__all__ = ["describe_function", "function_key", "provable"]

_MAX_DEPTH = 3  # closures holding functions holding functions ...: deeper ones are compared by identity
_SIMPLE = (type(None), bool, int, float, complex, str, bytes)


class _Same:
    """Hashable stand-in that compares by identity (cell contents such as a module or a tensor)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)

    def __repr__(self) -> str:
        return f"<same {type(self.value).__name__} at {id(self.value):#x}>"


def function_key(fn: Any) -> Hashable:
    """A key equal for two provably equivalent functions; ``fn`` itself (identity) when that cannot be shown."""
    if fn is None:
        return None
    key = _key(fn, _MAX_DEPTH)
    return ("identity", _Same(fn)) if key is None else ("code", key)


def provable(key: Hashable) -> bool:
    """Whether ``key`` came from the function's code (True) or only from its identity (False)."""
    return not (isinstance(key, tuple) and key and key[0] == "identity")


def describe_function(fn: Any) -> str:
    """``name`` (file:line) of a function, for messages."""
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"`{name}` ({code.co_filename}:{code.co_firstlineno})" if code is not None else f"`{name}`"


def _value(value: Any, depth: int) -> Hashable:
    if isinstance(value, _SIMPLE):
        return (type(value), value)
    if isinstance(value, tuple):
        return ("tuple", tuple(_value(v, depth) for v in value))
    if depth > 0 and isinstance(value, (types.FunctionType, functools.partial, types.MethodType)):
        key = _key(value, depth - 1)
        if key is not None:
            return key
    return _Same(value)


def _code(code: types.CodeType) -> Hashable:
    # Everything that decides what the code does; not its name, file or line numbers (the lambda on the next line
    # of the same file is the same function).
    return (
        code.co_code,
        tuple(_code(c) if isinstance(c, types.CodeType) else _value(c, 0) for c in code.co_consts),
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
    )


def _key(fn: Any, depth: int) -> Hashable | None:
    if isinstance(fn, types.FunctionType):
        try:
            cells = tuple(_value(cell.cell_contents, depth) for cell in fn.__closure__ or ())
        except ValueError:  # an empty cell (a name assigned after the function was made)
            return None
        kwdefaults = tuple(sorted((k, _value(v, depth)) for k, v in (fn.__kwdefaults__ or {}).items()))
        return (
            "function",
            _code(fn.__code__),
            _Same(fn.__globals__),  # the same module: its names resolve to the same objects
            tuple(_value(v, depth) for v in fn.__defaults__ or ()),
            kwdefaults,
            cells,
        )
    if isinstance(fn, types.MethodType):
        func = _key(fn.__func__, depth)
        return None if func is None else ("method", func, _Same(fn.__self__))
    if isinstance(fn, functools.partial):
        func = _key(fn.func, depth)
        if func is None:
            return None
        keywords = tuple(sorted((k, _value(v, depth)) for k, v in fn.keywords.items()))
        return ("partial", func, tuple(_value(v, depth) for v in fn.args), keywords)
    return None
