"""Feature networks as the evaluation sees them: what identifies their outputs, where they run, their layers.

Inception returns pool3 features and logits (:class:`~lightning_ganeval.inception.InceptionFeatures`); any other
``nn.Module`` that maps uint8 ``N x 3 x H x W`` images to an ``N x d`` tensor (DINOv2, CLIP, a domain network) is
a network with one layer, ``features``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lightning_ganeval.feature_network import network_identity
from lightning_ganeval.inception import InceptionFeatures

__all__ = ["network_device", "network_identity", "run_network"]  # network_identity: see feature_network


def network_device(network: nn.Module) -> torch.device:
    """The device a network runs on: its ``device`` attribute, else that of its first parameter or buffer."""
    device = getattr(network, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in (*network.parameters(), *network.buffers()):
        return tensor.device
    return torch.device("cpu")


def run_network(network: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """The outputs of a feature network by layer name: ``pool``/``logits`` (Inception) or ``features``."""
    output = network(images)
    if isinstance(output, InceptionFeatures):
        return {"pool": output.pool, "logits": output.logits}
    if isinstance(output, Tensor):
        if output.ndim != 2 or output.shape[0] != images.shape[0]:
            raise ValueError(
                f"A feature network must map N images to an (N, d) tensor; {type(network).__name__} returned"
                f" shape {tuple(output.shape)} for {images.shape[0]} images."
            )
        return {"features": output.float()}
    if isinstance(output, Mapping):
        return {str(k): v.float() for k, v in output.items()}
    raise TypeError(f"{type(network).__name__} returned {type(output).__name__}; expected an (N, d) tensor.")
