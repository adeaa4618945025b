"""Inception Score in float64 from logits or from per-split marginal sums: pure functions, no state.

The Inception Score follows the reference definition (Salimans et al. 2016, torch-fidelity): softmax over the
logits in float64, ``splits`` consecutive splits with boundaries ``i * N // splits``, per split
IS_k = exp(mean_x KL(p(y|x) ‖ p_k(y))), and the mean and *population* standard deviation (``ddof=0``, like
``np.std``) over the splits. torchmetrics' ``InceptionScore`` reports ``torch.std`` (``ddof=1``, larger by
√(splits/(splits−1))) and shuffles the samples first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_ganeval.frechet import _as_float64

__all__ = ["inception_score", "inception_score_from_sums", "split_boundaries"]


def split_boundaries(num_samples: int, splits: int) -> list[int]:
    """Reference split boundaries ``[i * num_samples // splits for i in 0..splits]`` (torch-fidelity, openai).

    Split ``k`` holds the samples with index in ``[b[k], b[k+1])``.
    """
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"`splits` must be a positive integer, got {splits!r}.")
    if num_samples < splits:
        raise ValueError(
            f"The Inception Score needs at least one sample per split: got {num_samples} samples for "
            f"splits={splits}. Use more samples or fewer splits."
        )
    return [i * num_samples // splits for i in range(splits + 1)]


def inception_score_from_sums(prob_sum: Any, plogp_sum: Any, count: Any) -> tuple[float, float]:
    """Inception Score from per-split sums (what :class:`~lightning_ganeval.accumulators.ISMarginals` accumulates).

    Per split k with n_k samples, m_k = Σ_x p(y|x) / n_k and

        IS_k = exp(Σ_x Σ_y p log p / n_k − Σ_y m_k log m_k),

    which equals exp(mean_x KL(p(y|x) ‖ m_k)).

    Args:
        prob_sum: Σ_x p(y|x) per split, shape ``(splits, C)``.
        plogp_sum: Σ_x Σ_y p log p per split, shape ``(splits,)``.
        count: Number of samples per split, shape ``(splits,)``; every split must be non-empty.

    Returns:
        ``(mean, std)`` over the splits, std with ``ddof=0`` (``np.std``, torch-fidelity, the reference code;
        torchmetrics uses ``ddof=1``).
    """
    probs = _as_float64(prob_sum, "prob_sum")
    plogp = _as_float64(plogp_sum, "plogp_sum", probs.device)
    counts = _as_float64(count, "count", probs.device)
    if probs.ndim != 2 or plogp.shape != (probs.shape[0],) or counts.shape != (probs.shape[0],):
        raise ValueError(
            "Expected prob_sum (splits, C), plogp_sum (splits,) and count (splits,), got "
            f"{tuple(probs.shape)}, {tuple(plogp.shape)} and {tuple(counts.shape)}."
        )
    empty = (counts <= 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"Inception Score split(s) {empty} received no samples; every split needs at least one "
            f"(counts per split: {counts.long().tolist()})."
        )
    marginal = probs / counts[:, None]
    # xlogy gives 0·log 0 = 0 for classes no sample in the split predicts.
    neg_entropy_marginal = torch.special.xlogy(marginal, marginal).sum(dim=1)
    scores = torch.exp(plogp / counts - neg_entropy_marginal)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"Inception Score is not finite (split scores {scores.tolist()}); were the logits finite?")
    return float(scores.mean()), float(scores.std(correction=0))


def _split_sums(log_probs: Tensor, split_ids: Tensor, splits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-split Σp, Σ p log p and counts from per-sample log-probabilities; deterministic (no atomics)."""
    probs = log_probs.exp()
    plogp = (probs * log_probs).sum(dim=1)
    one_hot = torch.nn.functional.one_hot(split_ids, splits).to(log_probs.dtype)
    return one_hot.T @ probs, one_hot.T @ plogp, one_hot.sum(dim=0)


def inception_score(logits: Any, splits: int = 10) -> tuple[float, float]:
    """Inception Score of stored logits, the reference computation (no shuffling).

    Equals torch-fidelity's ``isc_features_to_metric(logits, splits, shuffle=False)`` and the openai/TTUR code
    on the same, unshuffled samples.

    Args:
        logits: ``(N, C)`` logits (for the reference: the 1008 bias-free Inception logits), tensor or array.
        splits: Number of consecutive splits; split k holds samples ``[k*N//splits, (k+1)*N//splits)``.

    Returns:
        ``(mean, std)`` of the per-split scores; std with ``ddof=0`` like ``np.std`` and torch-fidelity
        (torchmetrics' ``InceptionScore`` uses ``ddof=1`` and a random permutation).

    Raises:
        ValueError: ``logits`` is not 2-D or not finite, or has fewer samples than ``splits``.

    Example:
        >>> import torch
        >>> mean, std = inception_score(torch.zeros(20, 5), splits=2)  # uniform predictions
        >>> round(mean, 9), round(std, 9)
        (1.0, 0.0)
    """
    x = _as_float64(logits, "logits")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"`logits` must have shape (N, num_classes), got {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("`logits` contains NaN or Inf.")
    n = x.shape[0]
    bounds = split_boundaries(n, splits)
    split_ids = _split_of(torch.arange(n, device=x.device), bounds)
    prob_sum, plogp_sum, count = _split_sums(torch.log_softmax(x, dim=1), split_ids, splits)
    return inception_score_from_sums(prob_sum, plogp_sum, count)


def _split_of(indices: Tensor, bounds: Sequence[int]) -> Tensor:
    """Split id of each global sample index for boundaries ``bounds`` (length splits + 1, increasing)."""
    left = torch.tensor(bounds[:-1], device=indices.device, dtype=torch.long)
    return torch.searchsorted(left, indices.long(), right=True) - 1
