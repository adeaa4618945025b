r"""Perceptual path length (Karras et al., CVPR 2019), as StyleGAN and torch-fidelity compute it.

For pair ``i`` of a fixed seeded bank of latent pairs ``(z0, z1)``:

.. math::
    d_i = \operatorname{LPIPS}\big(G(I(z_0, z_1, t)),\ G(I(z_0, z_1, t + \varepsilon))\big) / \varepsilon^2

with ``ε = 1e-4``; ``t = 0`` (``sampling="end"``: torch-fidelity, torchmetrics, StyleGAN's ``*end`` variants) or
``t ~ U[0, 1)`` drawn once per pair (``sampling="full"``: StyleGAN's ``*full`` variants). ``I`` is a spherical
interpolation of the latents (``"slerp"``: torch-fidelity's ``slerp_any``, norms interpolated along the arc, so
``I(z0, z1, 0) = z0``) or a linear one (``"lerp"``). With a mapping ``w = mapping_fn(z)`` the interpolation runs
between ``w0`` and ``w1`` instead (StyleGAN's W space, where it is linear). Latents of any shape are interpolated
as one flat vector per sample. LPIPS is :class:`~lightning_ganeval.lpips.LPIPSVGG16` (its distance is already a
sum of squared feature differences: it is divided by ε², not squared again).

The value is the mean of the ``d_i`` between the 1st and 99th percentiles, bounds included, with NumPy's
``"lower"`` rule for the low bound and ``"higher"`` for the high one (StyleGAN, torch-fidelity); ``ppl_std`` is
their population standard deviation (torch-fidelity's ``perceptual_path_length_std``).

Exactness: the two images of a pair come from one generator call on ``cat(z_a, z_b)`` (torch-fidelity's batch
layout), and the bank is cut into global batches of ``batch_size`` pairs of which rank ``r`` of ``W`` computes
``r, r + W, ...``: a pair is computed inside the very same batch at any world size, so its float32 distance is
bit-identical, which matters here because a rounding difference in the features moves a distance by ~1e-3
relative (it divides a difference of nearly equal images by 1e-8). The per-pair distances are then assembled by
a sum over ranks of zero-filled vectors (exact), and every rank reduces the same vector: the value is identical
for any world size.

Cost per evaluation: ``2 × num_pairs`` generated images (plus ``2 × num_pairs`` latents through ``mapping_fn``)
and ``2 × num_pairs`` VGG16 passes at ``resize`` × ``resize``. Memory: the per-pair distances (8 bytes each, on
every rank), this rank's share of the bank (``2 × num_pairs / W`` latents) and one batch of images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ganeval.distributed import agree, rank_and_world_size
from lightning_ganeval.images import _to_255
from lightning_ganeval.lpips import LPIPSVGG16
from lightning_ganeval.pixel_space import PixelSpace, coerce_pixel_space
from lightning_ganeval.sampling import (
    LatentBank,
    check_generated,
    modules_of,
    norm_buffers,
    normalize_latent_shape,
    preserved_module_state,
    seed_batch_noise,
    unwrap_generator,
)

__all__ = [
    "DEFAULT_EPSILON",
    "INTERPOLATIONS",
    "SAMPLINGS",
    "PPLResult",
    "PerceptualPathLength",
    "interpolate",
    "lerp",
    "path_endpoints",
    "percentile_bounds",
    "reduce_path_lengths",
    "slerp",
]

DEFAULT_EPSILON = 1e-4
INTERPOLATIONS = ("slerp", "lerp")
SAMPLINGS = ("end", "full")
# Below this a norm or an angle counts as zero (torch-fidelity's and torchmetrics' constant).
_SLERP_EPS = 1e-7
# `t` of sampling="full" comes from its own stream, so the pair latents are the same for both samplings.
_T_SEED_OFFSET = 0x5A17


def lerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    """``a + (b - a) t``, elementwise (``t`` a number or broadcastable)."""
    return a + (b - a) * t


def slerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    """Spherical interpolation of the rows of ``a`` and ``b`` (``N × D``), norms interpolated along the arc.

    ``sin((1 - t) ω) / sin ω · a + sin(t ω) / sin ω · b`` with ``ω`` the angle between the rows, as torch-fidelity's
    ``slerp_any`` (so ``t = 0`` gives ``a`` and ``t = 1`` gives ``b``); rows that are (anti-)parallel or zero fall
    back to :func:`lerp`. The float32 operations follow torch-fidelity's order, so both give the same bits.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"slerp needs two N x D tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    a_unit = a / (a**2).sum(dim=-1, keepdim=True).sqrt().clamp_min(_SLERP_EPS)
    b_unit = b / (b**2).sum(dim=-1, keepdim=True).sqrt().clamp_min(_SLERP_EPS)
    cos = (a_unit * b_unit).sum(dim=-1, keepdim=True)
    degenerate = (
        (a_unit.norm(dim=-1, keepdim=True) < _SLERP_EPS)
        | (b_unit.norm(dim=-1, keepdim=True) < _SLERP_EPS)
        | (cos > 1 - _SLERP_EPS)
        | (cos < -1 + _SLERP_EPS)
    )
    omega = cos.acos()
    denominator = omega.sin().clamp_min(_SLERP_EPS)
    out = ((1 - t) * omega).sin() / denominator * a + (t * omega).sin() / denominator * b
    return torch.where(degenerate, lerp(a, b, t), out)


def interpolate(a: Tensor, b: Tensor, t: float | Tensor, method: str) -> Tensor:
    """Interpolate per sample: ``a``, ``b`` are ``N × ...`` (flattened to ``N × D``); ``t`` a number or ``(N,)``."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` must be one of {', '.join(map(repr, INTERPOLATIONS))}, got {method!r}.")
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if isinstance(t, Tensor):
        t = t.to(flat_a.dtype).reshape(-1, 1)
    out = slerp(flat_a, flat_b, t) if method == "slerp" else lerp(flat_a, flat_b, t)
    return out.reshape(a.shape)


def path_endpoints(z0: Tensor, z1: Tensor, t: Tensor | None, epsilon: float, method: str) -> tuple[Tensor, Tensor]:
    """The two points of each pair: ``(I(t), I(t + ε))``; with ``t=None`` (sampling "end") ``(z0, I(ε))``."""
    if t is None:
        # z0 itself, not I(z0, z1, 0): torch-fidelity's points (slerp's I(0) is z0 only up to rounding).
        return z0, interpolate(z0, z1, epsilon, method)
    return interpolate(z0, z1, t, method), interpolate(z0, z1, t + epsilon, method)


def percentile_bounds(values: Tensor, lower: float | None, upper: float | None) -> tuple[float, float]:
    """NumPy's ``percentile(values, lower, method="lower")`` and ``percentile(values, upper, method="higher")``.

    ``None`` for a side keeps everything on that side (``-inf`` / ``inf``). The index is NumPy's
    ``(n - 1) * (q / 100)``, floored for the low bound and ceiled for the high one, in the same float64 arithmetic.
    """
    n = values.numel()
    if n == 0:
        return -math.inf, math.inf
    ordered = torch.sort(values.flatten()).values
    low = -math.inf if lower is None else float(ordered[math.floor((n - 1) * (lower / 100))])
    high = math.inf if upper is None else float(ordered[math.ceil((n - 1) * (upper / 100))])
    return low, high


def reduce_path_lengths(
    distances: Tensor, lower: float | None = 1.0, upper: float | None = 99.0
) -> tuple[float, float, int]:
    """``(mean, std, kept)`` of the finite ``distances`` within the percentile bounds (float64, std with ddof 0)."""
    values = distances.double().flatten()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return math.nan, math.nan, 0
    low, high = percentile_bounds(values, lower, upper)
    kept = values[(values >= low) & (values <= high)]
    return float(kept.mean()), float(kept.std(correction=0)), int(kept.numel())


@dataclass(frozen=True)
class PPLResult:
    """One evaluation of :class:`PerceptualPathLength` (identical on every rank).

    Attributes:
        values: ``{name: mean, name_std: std}``.
        distances: Every pair's ``LPIPS / ε²`` in bank order, float64 on the CPU (NaN for non-finite images).
        num_kept: Pairs within the percentile bounds.
        num_nonfinite: Pairs with a NaN or Inf pixel in either image (left out).
        clamped_fraction: Fraction of generated pixel values outside the pixel space (clamped).
    """

    values: dict[str, float]
    distances: Tensor
    num_kept: int
    num_nonfinite: int
    clamped_fraction: float


def _check_number(name: str, value: Any, *, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"`{name}` must be a finite number, got {value!r}.")
    if value <= low or (high is not None and value >= high):
        bound = f"in ({low}, {high})" if high is not None else f"> {low}"
        raise ValueError(f"`{name}` must be {bound}, got {value!r}.")
    return float(value)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return value


class PerceptualPathLength:
    """Perceptual path length of a generator over a fixed bank of latent pairs (see the module docstring).

    Args:
        latent_shape: Shape of one latent vector ``z``.
        num_pairs: Number of pairs (StyleGAN: 50 000 pairs; torch-fidelity and torchmetrics: 10 000).
        batch_size: Pairs per generator call (the call gets ``2 × batch_size`` latents).
        seed: Seed of the pair bank (and of ``t`` for ``sampling="full"``).
        epsilon: Step ``ε`` along the path.
        interpolation: ``"slerp"`` or ``"lerp"``; default ``"slerp"`` in z, ``"lerp"`` with ``mapping_fn`` (W).
        sampling: ``"end"`` (``t = 0``) or ``"full"`` (``t ~ U[0, 1)`` per pair).
        space: Pixel space of the generated images (a :class:`~lightning_ganeval.PixelSpace` or ``(low, high)``).
        resize: Side of the images fed to LPIPS (torch-fidelity's rule), or ``None`` for their own size.
        quantize: Round the images to uint8 before LPIPS (torch-fidelity's default input, ``uint8`` samples). Off
            by default, as StyleGAN: images ε apart differ by far less than one grey level.
        discard: ``(lower, upper)`` percentiles outside which distances are left out; ``None`` for a side keeps it.
        mapping: Whether :meth:`evaluate` gets a ``mapping_fn`` (W space); only picks the default ``interpolation``.
        lpips: An LPIPS network (``forward(images0, images1) -> (N,)`` on [0, 255] images); default
            :class:`~lightning_ganeval.lpips.LPIPSVGG16` from ``lpips_weights`` / ``vgg16_weights``, built on first
            use.
        lpips_weights: Local ``weights-vgg16-lpips.pth`` (see :func:`~lightning_ganeval.lpips.resolve_lpips_weights`).
        vgg16_weights: Local ``vgg16-397923af.pth``.
        name: Key of the value (``name_std`` for the standard deviation).
    """

    def __init__(
        self,
        latent_shape: int | Sequence[int],
        *,
        num_pairs: int = 10_000,
        batch_size: int = 64,
        seed: int = 0,
        epsilon: float = DEFAULT_EPSILON,
        interpolation: str | None = None,
        sampling: str = "end",
        space: PixelSpace | Sequence[float] = (-1.0, 1.0),
        resize: int | None = 64,
        quantize: bool = False,
        discard: tuple[float | None, float | None] = (1.0, 99.0),
        mapping: bool = False,
        lpips: nn.Module | None = None,
        lpips_weights: str | os.PathLike[str] | None = None,
        vgg16_weights: str | os.PathLike[str] | None = None,
        name: str = "ppl",
    ) -> None:
        self.latent_shape = normalize_latent_shape(latent_shape)
        self.num_pairs = _check_positive_int("num_pairs", num_pairs)
        self.batch_size = _check_positive_int("batch_size", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int, got {seed!r}.")
        self.seed = seed
        self.epsilon = _check_number("epsilon", epsilon, low=0.0)
        if interpolation is None:
            interpolation = "lerp" if mapping else "slerp"
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {', '.join(map(repr, INTERPOLATIONS))} or None, got {interpolation!r}."
            )
        self.interpolation = interpolation
        if sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {', '.join(map(repr, SAMPLINGS))}, got {sampling!r}.")
        self.sampling = sampling
        self.space: PixelSpace = coerce_pixel_space(space, required=True)  # type: ignore[assignment]
        if resize is not None:
            _check_positive_int("resize", resize)
        self.resize = resize
        if not isinstance(quantize, bool):
            raise TypeError(f"`quantize` must be True or False, got {quantize!r}.")
        self.quantize = quantize
        self.discard = _check_discard(discard)
        if lpips is not None and not isinstance(lpips, nn.Module):
            raise TypeError(f"`lpips` must be a torch.nn.Module or None, got {type(lpips).__name__}.")
        self.lpips = lpips
        self.lpips_weights = lpips_weights
        self.vgg16_weights = vgg16_weights
        self.name = name
        self.bank = LatentBank(self.num_pairs, (2, *self.latent_shape), seed=seed, batch_size=self.batch_size)
        self._t: Tensor | None = None

    def keys(self) -> list[str]:
        """The keys of :attr:`PPLResult.values`."""
        return [self.name, f"{self.name}_std"]

    def describe(self) -> dict[str, Any]:
        """The settings that change the value (for checkpoints and provenance)."""
        return {
            "num_pairs": self.num_pairs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epsilon": self.epsilon,
            "interpolation": self.interpolation,
            "sampling": self.sampling,
            "pixel_space": self.space.describe(),
            "resize": "none" if self.resize is None else self.resize,
            "quantize": self.quantize,
            "discard": f"{self.discard[0]}-{self.discard[1]}",
        }

    def network(self, device: torch.device | str = "cpu", *, progress: bool = True) -> nn.Module:
        """The LPIPS network on ``device`` (built from the weights files on first use)."""
        if self.lpips is None:
            self.lpips = LPIPSVGG16(self.lpips_weights, self.vgg16_weights, resize=self.resize, progress=progress)
        return self.lpips.to(device)

    def t_values(self, indices: Tensor) -> Tensor | None:
        """``t`` of the pairs at ``indices`` (``None`` for sampling "end"); drawn once for the whole bank."""
        if self.sampling == "end":
            return None
        if self._t is None:
            generator = torch.Generator().manual_seed(self.seed + _T_SEED_OFFSET)
            self._t = torch.rand(self.num_pairs, generator=generator, dtype=torch.float32)
        return self._t[indices]

    def to_pixels(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Generated images → RGB in [0, 255] for LPIPS: ``(pixels, finite per sample, clamped count)``."""
        x = images if images.dtype == torch.float64 else images.float()
        scaled = _to_255(x, self.space)
        finite = torch.isfinite(scaled).flatten(1).all(dim=1)
        clamped = scaled.clamp(0, 255)
        num_clamped = torch.count_nonzero((scaled != clamped) & torch.isfinite(scaled))
        if self.quantize:
            # As lightning_ganeval.images.to_uint8_rgb: round half to even, then clamp.
            clamped = scaled.round().clamp(0, 255).to(torch.uint8)
        if clamped.shape[1] == 1:
            clamped = clamped.expand(-1, 3, -1, -1)
        return clamped, finite, num_clamped

    def pair_distances(
        self,
        render: Callable[[Tensor], Any],
        z0: Tensor,
        z1: Tensor,
        t: Tensor | None = None,
        *,
        mapping_fn: Callable[[Tensor], Tensor] | None = None,
        network: nn.Module | None = None,
        source: str = "render(z)",
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """``LPIPS / ε²`` of each pair of one batch: ``(distances float32, finite mask, clamped count, values)``.

        Args:
            render: Latents (or mapped latents) → images in the pixel space; called once on ``2 × B`` inputs.
            z0: ``B × latent_shape`` start latents; z1 the end latents.
            z1: See z0.
            t: ``(B,)`` positions for sampling "full", or None for "end".
            mapping_fn: Maps ``z`` to the space interpolated in (called once on ``cat(z0, z1)``).
            network: The LPIPS network; default :meth:`network` on the images' device.
            source: How ``render`` is called, for error messages.
        """
        if mapping_fn is not None:
            mapped = mapping_fn(torch.cat([z0, z1]))
            if not isinstance(mapped, Tensor) or mapped.shape[0] != 2 * len(z0):
                raise ValueError(
                    f"`mapping_fn` must return a tensor with one row per latent ({2 * len(z0)}), got"
                    f" {type(mapped).__name__} {tuple(getattr(mapped, 'shape', ()))}."
                )
            z0, z1 = mapped.chunk(2)
        za, zb = path_endpoints(z0, z1, None if t is None else t.to(z0.device), self.epsilon, self.interpolation)
        output = render(torch.cat([za, zb]))
        images = check_generated(output, 2 * len(za), source=source)
        pixels, finite, clamped = self.to_pixels(images)
        network = network if network is not None else self.network(pixels.device)
        pixels = pixels.to(_device_of(network))
        first, second = pixels.chunk(2)
        with torch.autocast(first.device.type, enabled=False):
            distances = network(first, second) / self.epsilon**2
        pair_finite = (finite[: len(za)] & finite[len(za) :]).to(distances.device)
        return distances.float(), pair_finite, clamped, images.numel()

    def evaluate(
        self,
        render: Callable[[Tensor], Any],
        *,
        mapping_fn: Callable[[Tensor], Tensor] | None = None,
        module: nn.Module | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        generator_device: torch.device | str | None = None,
        network_device: torch.device | str | None = None,
        call: Callable[[Callable[[Tensor], Any], Tensor], Any] | None = None,
        progress: Callable[[int], None] | None = None,
        source: str = "render(z)",
    ) -> PPLResult:
        """Compute this rank's share of the pairs, assemble every pair's distance on every rank and reduce.

        A collective under ``torch.distributed`` (every rank calls it); a failure on one rank raises on all.

        Args:
            render: ``render(z) -> images`` in the pixel space (with ``mapping_fn``: ``render(w)``).
            mapping_fn: ``mapping_fn(z) -> w`` for W-space paths.
            module: Module whose state is preserved (eval mode, ``no_grad``, BatchNorm statistics, ``requires_grad``,
                global random states); default ``render`` if it is one.
            rank: This process's rank; default from ``torch.distributed``.
            world_size: Number of processes; likewise.
            generator_device: Where latents go; default ``module``'s device.
            network_device: Where LPIPS runs; default the generator's device.
            call: ``call(fn, x)`` runs ``render`` / ``mapping_fn`` (e.g. under a precision context).
            progress: Called with the number of pairs done on this rank after each batch.
            source: How ``render`` is called, for error messages.
        """
        rank, world_size = rank_and_world_size(rank, world_size)
        render, module = unwrap_generator(render, module)
        device = torch.device(generator_device) if generator_device is not None else _device_of(module)
        network = self.network(network_device if network_device is not None else device)
        collective_device = _device_of(network)

        def run(fn: Callable[[Tensor], Any], x: Tensor) -> Any:
            return call(fn, x) if call is not None else fn(x)

        mapped = None if mapping_fn is None else (lambda z: run(mapping_fn, z))
        full = torch.zeros(self.num_pairs, dtype=torch.float64, device=collective_device)
        counts = torch.zeros(2, dtype=torch.float64, device=collective_device)  # clamped, values
        error: Exception | None = None
        done = 0
        # As in the Evaluator: the modules a plain callable hides (`lambda z: G(z)`) run in eval mode and keep their
        # state, and any other module called in training mode runs in eval mode (no BatchNorm statistic changes).
        found = modules_of(render) + (modules_of(mapping_fn) if mapping_fn is not None else [])
        found = [m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m for m in found]
        roots = list({id(m): m for m in ([module] if module is not None else []) + found}.values())
        try:
            with preserved_module_state(roots), torch.no_grad():
                if module is not None and world_size > 1:
                    # Every rank samples rank 0's generator (BatchNorm statistics differ after a step; restored).
                    for buffer in norm_buffers(module):
                        torch.distributed.broadcast(buffer, src=0)
                for batch in self.bank.shard(rank, world_size):
                    seed_batch_noise(self.seed, batch.batch_id, device)
                    latents = batch.latents.to(device)
                    distances, finite, clamped, values = self.pair_distances(
                        lambda z: run(render, z),
                        latents[:, 0],
                        latents[:, 1],
                        self.t_values(batch.indices),
                        mapping_fn=mapped,
                        network=network,
                        source=source,
                    )
                    distances = torch.where(finite, distances.double(), math.nan)
                    full[batch.indices.to(collective_device)] = distances.to(collective_device)
                    counts[0] += clamped.to(collective_device, torch.float64)
                    counts[1] += values
                    done += len(batch.indices)
                    if progress is not None:
                        progress(done)
        except Exception as err:  # re-raised below, after the other ranks have been told
            error = err
        # One collective, also on a rank that failed. The distances are zero everywhere but this rank's pairs: the
        # sum assembles every distance exactly (x + 0 = x, NaN kept).
        summed = agree(
            error,
            totals=torch.cat([counts, full]),
            world_size=world_size,
            message="The PPL evaluation failed on another process; see its traceback.",
        )
        assert summed is not None
        counts, full = summed[:2], summed[2:]
        distances = full.cpu()
        num_nonfinite = int(torch.isnan(distances).sum())
        mean, std, kept = reduce_path_lengths(distances, *self.discard)
        return PPLResult(
            values={self.name: mean, f"{self.name}_std": std},
            distances=distances,
            num_kept=kept,
            num_nonfinite=num_nonfinite,
            clamped_fraction=float(counts[0] / counts[1]) if counts[1] > 0 else 0.0,
        )


def _check_discard(discard: Any) -> tuple[float | None, float | None]:
    if not isinstance(discard, (tuple, list)) or len(discard) != 2:
        raise ValueError(f"`discard` must be a pair (lower, upper) of percentiles or None, got {discard!r}.")
    lower, upper = discard
    lower = None if lower is None else _check_number("discard", lower, low=0.0, high=100.0)
    upper = None if upper is None else _check_number("discard", upper, low=0.0, high=100.0)
    if lower is not None and upper is not None and lower >= upper:
        raise ValueError(f"`discard` must have lower < upper, got {discard!r}.")
    return lower, upper


def _device_of(module: nn.Module | None) -> torch.device:
    if module is None:
        return torch.device("cpu")
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")
