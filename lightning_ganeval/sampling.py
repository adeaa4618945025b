"""Fixed latents, this rank's share of them, and running the generator without disturbing training.

The callbacks evaluate the generator on the same ``num_samples`` latent vectors at every evaluation, so that
epoch-to-epoch changes of FID and IS come from the model and not from the noise. The vectors come from a private
:class:`torch.Generator` seeded with the callback's ``seed``; the global random number generators are never used
for them.

The bank is cut into *global batches* of ``batch_size`` consecutive samples, and rank ``r`` of ``W`` evaluates the
global batches ``r, r + W, r + 2W, ...``. Every sample is therefore generated and passed through Inception inside
the very same batch whatever the number of processes, so its features are bit-identical for any world size and the
merged statistics differ from a single-process run only by the order of the float64 sums.

`preserved_module_state` runs the generator in eval mode under `torch.no_grad` and afterwards puts back everything
a sampling pass could change: each submodule's ``training`` flag, the running statistics of normalisation layers,
``requires_grad`` flags, the grad mode and the global Python, NumPy and torch (CPU and initialised CUDA) random
states. A training run with the callbacks thus follows the same trajectory as one without them.

A generator given as a plain callable (``evaluate(lambda z: G(z))``, a ``sample_fn`` that reads an EMA copy kept as
a plain attribute) hides its modules: `modules_of` finds them in the callable's closure, globals, bound ``self`` and
attributes, and `eval_mode_guard` puts any module that still runs in training mode during the evaluation into eval
mode for the call, so that no BatchNorm statistics change, registered or not.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import random
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LatentBank",
    "SampleBatch",
    "check_generated",
    "eval_mode_guard",
    "isolated_rng",
    "modules_of",
    "norm_buffers",
    "normalize_latent_shape",
    "preserved_module_state",
    "seed_batch_noise",
    "unwrap_generator",
]

# Latents are drawn in chunks of this many rows, whatever `batch_size` and the world size are, so that the bank
# depends on (seed, num_samples, latent_shape) only and a rank never holds more than its share plus one chunk.
_DRAW_CHUNK = 1024
_SEED_MASK = (1 << 63) - 1
# Odd 64-bit constant (golden ratio) that spreads consecutive seeds far apart before the batch id is added.
_SEED_MIX = 0x9E3779B97F4A7C15


def normalize_latent_shape(latent_shape: int | Sequence[int], *, argument: str = "latent_shape") -> tuple[int, ...]:
    """Return ``latent_shape`` as a tuple of positive ints (an int ``d`` means ``(d,)``).

    Raises:
        TypeError: If it is neither an int nor a sequence of ints.
        ValueError: If it is empty or has a dimension below 1.
    """
    if isinstance(latent_shape, bool):
        raise TypeError(f"`{argument}` must be an int or a tuple of ints, got {latent_shape!r}.")
    if isinstance(latent_shape, int):
        shape: tuple[Any, ...] = (latent_shape,)
    elif isinstance(latent_shape, Sequence) and not isinstance(latent_shape, str):
        shape = tuple(latent_shape)
    else:
        raise TypeError(f"`{argument}` must be an int or a tuple of ints, got {latent_shape!r}.")
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
        raise TypeError(f"`{argument}` must be an int or a non-empty tuple of ints, got {latent_shape!r}.")
    if any(d < 1 for d in shape):
        raise ValueError(f"`{argument}` must have dimensions >= 1, got {latent_shape!r}.")
    return shape


@dataclass(frozen=True)
class SampleBatch:
    """One global batch of the bank.

    Attributes:
        batch_id: Position of the batch in the bank (``indices[0] // batch_size``).
        indices: Global sample indices, int64 on the CPU.
        latents: The latent vectors, float32 on the CPU, ``(len(indices), *latent_shape)``.
    """

    batch_id: int
    indices: Tensor
    latents: Tensor


class LatentBank:
    """``num_samples`` fixed latent vectors drawn once from a private generator seeded with ``seed``.

    Args:
        num_samples: Number of latent vectors (the number of samples an evaluation generates).
        latent_shape: Shape of one latent vector, e.g. ``128`` or ``(128, 1, 1)``.
        seed: Seed of the private :class:`torch.Generator`.
        batch_size: Size of the global batches the bank is cut into; the last one may be smaller.

    Example::

        >>> bank = LatentBank(10, 4, seed=0, batch_size=4)
        >>> [b.indices.tolist() for b in bank.shard(rank=1, world_size=2)]
        [[4, 5, 6, 7]]
    """

    def __init__(self, num_samples: int, latent_shape: int | Sequence[int], *, seed: int = 0, batch_size: int = 64):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int, got {seed!r}.")
        self.num_samples = num_samples
        self.latent_shape = normalize_latent_shape(latent_shape)
        self.seed = seed
        self.batch_size = batch_size
        self._shards: dict[tuple[int, int], list[SampleBatch]] = {}

    @property
    def num_batches(self) -> int:
        """Number of global batches, ``ceil(num_samples / batch_size)``."""
        return -(-self.num_samples // self.batch_size)

    def batch_ids(self, rank: int = 0, world_size: int = 1) -> range:
        """The global batches that ``rank`` of ``world_size`` evaluates."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"`rank` must be in [0, world_size), got rank={rank}, world_size={world_size}.")
        return range(rank, self.num_batches, world_size)

    def shard(self, rank: int = 0, world_size: int = 1) -> list[SampleBatch]:
        """The batches of ``rank`` of ``world_size``, drawn on first use and then kept (CPU memory ~ N/W vectors)."""
        key = (rank, world_size)
        if key not in self._shards:
            self._shards[key] = self._draw(self.batch_ids(rank, world_size))
        return self._shards[key]

    def latents(self) -> Tensor:
        """The whole bank, ``(num_samples, *latent_shape)`` (for tests and inspection)."""
        return torch.cat([b.latents for b in self.shard(0, 1)])

    def _draw(self, batch_ids: range) -> list[SampleBatch]:
        wanted = torch.zeros(self.num_samples, dtype=torch.bool)
        for b in batch_ids:
            wanted[b * self.batch_size : (b + 1) * self.batch_size] = True
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        kept = []
        for start in range(0, self.num_samples, _DRAW_CHUNK):
            rows = min(_DRAW_CHUNK, self.num_samples - start)
            # Every chunk is drawn (and mostly dropped) so that the stream position does not depend on the shard.
            chunk = torch.randn((rows, *self.latent_shape), generator=generator, dtype=torch.float32)
            mask = wanted[start : start + rows]
            if mask.any():
                kept.append(chunk[mask])
        latents = torch.cat(kept) if kept else torch.empty((0, *self.latent_shape))
        batches, offset = [], 0
        for b in batch_ids:
            indices = torch.arange(b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples))
            batches.append(SampleBatch(b, indices, latents[offset : offset + len(indices)]))
            offset += len(indices)
        return batches

    def __getstate__(self) -> dict[str, Any]:
        # The drawn shards are a cache: cheap to redraw, and not worth pickling into spawned processes.
        return {**self.__dict__, "_shards": {}}


def seed_batch_noise(seed: int, batch_id: int, device: torch.device | None = None) -> None:
    """Seed the global torch generators for one global batch of an evaluation.

    Generators that draw noise themselves (e.g. StyleGAN noise inputs, dropout in eval mode) then get the same noise
    for a sample at every evaluation, after a resume and for any world size. Call it only inside `isolated_rng`.
    """
    batch_seed = (seed * _SEED_MIX + batch_id + 1) & _SEED_MASK
    torch.default_generator.manual_seed(batch_seed)
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        with torch.cuda.device(device):
            torch.cuda.manual_seed(batch_seed)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Restore the global Python, NumPy and torch (CPU and initialised CUDA) random states on exit.

    Unlike ``lightning.pytorch.utilities.seed.isolate_rng`` it never initialises CUDA (which would break forked
    ``ddp_notebook`` workers), and it touches NumPy only if something already imported it.
    """
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        if numpy is not None:
            numpy.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def norm_buffers(module: nn.Module) -> list[Tensor]:
    """The running statistics (mean, var, count) of the normalisation layers of ``module`` that track them."""
    return [
        buffer
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buffer is not None
    ]


# How far `modules_of` follows references from the generator callable (closure -> object -> attribute -> list ->
# module is 4 steps), and how many objects it looks at in all (tens of milliseconds at most): a bound on the search.
_SEARCH_DEPTH = 4
_SEARCH_LIMIT = 2_000
# Values that cannot hold a module: not searched.
_LEAVES = (type, types.ModuleType, Tensor, str, bytes, int, float, complex, bool, type(None), types.BuiltinFunctionType)


def unwrap_generator(generate: Any, module: nn.Module | None) -> tuple[Any, nn.Module | None]:
    """``(generate, module)`` without their ``DistributedDataParallel`` wrappers; ``module`` defaults to ``generate``.

    DDP's forward broadcasts buffers on every call, and ranks make different numbers of calls in an evaluation.
    """
    if isinstance(generate, nn.parallel.DistributedDataParallel):
        generate = generate.module
    if isinstance(module, nn.parallel.DistributedDataParallel):
        module = module.module
    return generate, module if module is not None else (generate if isinstance(generate, nn.Module) else None)


def modules_of(generate: Any) -> list[nn.Module]:
    """The modules a generator callable may run, each once, in the order found.

    ``generate`` itself if it is a module; otherwise what its closure cells, default arguments and the global names
    its code reads hold, the ``self`` of a bound method, the function and arguments of a ``functools.partial``, and
    the attributes of plain objects among them (e.g. a ``GAN`` class holding ``G`` and ``G_ema``). For every module
    found, attributes that hold a module without registering it are followed too: an EMA copy set with
    ``object.__setattr__`` or kept in a list or dict. Submodules of a module found are not listed separately.

    The search is bounded (depth 4, 2,000 objects); `eval_mode_guard` covers whatever it misses.

    Example::

        >>> G = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> modules_of(lambda z: G(z)) == [G]
        True
    """
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()
    # Breadth first: the modules nearest to the callable are found before a large object uses up the budget.
    queue: collections.deque[tuple[Any, int]] = collections.deque([(generate, 0)])
    while queue and len(seen) < _SEARCH_LIMIT:
        obj, depth = queue.popleft()
        if depth > _SEARCH_DEPTH or id(obj) in seen or isinstance(obj, _LEAVES):
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.setdefault(id(obj), obj)
        step = 0 if isinstance(obj, types.MethodType) else 1  # a bound method is its self and function
        queue.extend((child, depth + step) for child in _children(obj))
    inner = {id(sub) for module in found.values() for sub in module.modules() if sub is not module}
    return [module for key, module in found.items() if key not in inner]


def _children(obj: Any) -> list[Any]:
    """What `modules_of` looks at next from ``obj``."""
    if isinstance(obj, nn.Module):
        # Registered submodules are covered by the module itself; follow only what is held without registering.
        return [
            module
            for sub in obj.modules()
            for name, value in vars(sub).items()
            if name not in ("_modules", "_parameters", "_buffers")
            for module in _unregistered_modules(value)
        ]
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    if isinstance(obj, functools.partial):
        return [obj.func, *obj.args, *obj.keywords.values()]
    if isinstance(obj, types.FunctionType):
        children = []
        for cell in obj.__closure__ or ():
            try:
                children.append(cell.cell_contents)
            except ValueError:  # an empty cell (a variable assigned after the closure was made)
                continue
        children += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        return children + [obj.__globals__[name] for name in _global_names(obj.__code__) if name in obj.__globals__]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(itertools.islice(obj, _SEARCH_LIMIT))  # a long list of data is not read to its end
    if isinstance(obj, dict):
        return list(itertools.islice(obj.values(), _SEARCH_LIMIT))
    try:
        attributes = vars(obj)
    except TypeError:  # no __dict__ (slots, builtins)
        return []
    return list(attributes.values()) if isinstance(attributes, dict) else []


def _unregistered_modules(value: Any) -> list[nn.Module]:
    """A module attribute's value if it is a module, or the modules directly in a list, tuple or dict value."""
    if isinstance(value, nn.Module):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, nn.Module)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, nn.Module)]
    return []


def _global_names(code: types.CodeType) -> list[str]:
    """The names a code object and its nested code objects (lambdas, comprehensions) look up."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return names


@contextlib.contextmanager
def eval_mode_guard() -> Iterator[None]:
    """Run every module called in training mode during the body in eval mode; restore the flags on exit.

    A temporary global forward pre-hook (``torch.nn.modules.module.register_module_forward_pre_hook``) sets
    ``training = False`` on a module called in training mode and on its submodules, and sets it back on exit, also when
    the body raises. So a module nobody named (an EMA copy the search missed, one that a ``sample_fn`` switches to
    ``train()``) uses its BatchNorm running statistics instead of updating them and runs Dropout off. It acts on
    modules called as ``module(x)``, in any thread while it is active.
    """
    switched: list[nn.Module] = []

    def to_eval(module: nn.Module, args: Any) -> None:
        if module.training:
            for sub in module.modules():
                if sub.training:
                    sub.training = False
                    switched.append(sub)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(to_eval)
    try:
        yield
    finally:
        handle.remove()
        for module in switched:
            module.training = True


def _unique(items: Iterator[Any]) -> list[Any]:
    """Each item once, by identity (tensors compare elementwise, so no set or ``in``)."""
    kept: dict[int, Any] = {}
    for item in items:
        kept.setdefault(id(item), item)
    return list(kept.values())


@contextlib.contextmanager
def preserved_module_state(module: nn.Module | Sequence[nn.Module]) -> Iterator[None]:
    """Run the body with ``module`` (or each of several) in eval mode under `torch.no_grad`, an `isolated_rng` and an
    `eval_mode_guard`; then restore it.

    Restored on exit, also when the body raises: the ``training`` flag of every submodule (set directly, so
    overridden ``train()`` methods are not called), the running statistics of normalisation layers (in case a
    ``sample_fn`` changes them other than through a call in training mode), ``requires_grad`` of every parameter,
    the grad mode and the global random states.
    """
    roots = [module] if isinstance(module, nn.Module) else list(module)
    modes = [(m, m.training) for m in _unique(m for root in roots for m in root.modules())]
    requires_grad = [(p, p.requires_grad) for p in _unique(p for root in roots for p in root.parameters())]
    norm_stats = [(b, b.detach().clone()) for b in _unique(b for root in roots for b in norm_buffers(root))]
    try:
        with isolated_rng(), torch.no_grad(), eval_mode_guard():
            for root in roots:
                root.eval()
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in requires_grad:
            p.requires_grad_(flag)
        with torch.no_grad():
            for buffer, saved in norm_stats:
                buffer.copy_(saved)


def check_generated(images: Any, num_latents: int, *, source: str) -> Tensor:
    """Validate what the generator returned for ``num_latents`` latents and cast it to float32.

    Args:
        images: The generator output.
        num_latents: Number of latents it was given.
        source: How the generator was called, for the error message (e.g. ``"pl_module(z)"``).

    Raises:
        TypeError: If it is not a floating point tensor.
        ValueError: If it is not ``(num_latents, C, H, W)``.
    """
    if not isinstance(images, Tensor):
        raise TypeError(
            f"`{source}` must return a tensor of images (N, C, H, W), got {type(images).__name__}. Pass"
            " `sample_fn=lambda pl_module, z: ...` to pick the images out of your generator's output."
        )
    if not images.is_floating_point():
        raise TypeError(f"`{source}` must return floating point images in `value_range`, got dtype {images.dtype}.")
    if images.ndim != 4 or images.shape[0] != num_latents:
        raise ValueError(
            f"`{source}` must return images of shape (N, C, H, W) with N={num_latents} (one per latent), got"
            f" shape {tuple(images.shape)}."
        )
    return images.float()


SampleFn = Callable[[Any, Tensor], Tensor]
