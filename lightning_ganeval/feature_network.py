"""What every feature network of the package shares: eval only, one device, fixed numerics, one description.

:class:`FeatureNetwork` is the base of :class:`~lightning_ganeval.inception.InceptionExtractor`,
:class:`~lightning_ganeval.dinov2.DINOv2Extractor` and :class:`~lightning_ganeval.clip.CLIPExtractor`. A subclass
builds its layers, sets ``weights``, ``resize`` and ``identity``, calls :meth:`FeatureNetwork._place` and
runs its forward inside :meth:`FeatureNetwork._numerics` (DINOv2 and CLIP through the shared
:meth:`FeatureNetwork._bicubic_input` and :meth:`FeatureNetwork._embed`).

:func:`network_provenance` is the one description of a network's outputs, written into and checked against
statistics files and cache keys; it accepts any ``nn.Module`` (a user's own network is identified by a digest of
its weights).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ganeval.weights import ResolvedWeights

__all__ = ["FeatureNetwork", "feature_numerics", "network_identity", "network_provenance"]

N = TypeVar("N", bound=nn.Module)


def default_device(device: str | torch.device | int | None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None``: the current CUDA device if CUDA is available, else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        # "cuda" and "cuda:0" must share one extractor.
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def check_images(images: Any) -> None:
    """Refuse anything but a uint8 N x 3 x H x W tensor, pointing at the conversion helper."""
    hint = "convert it with lightning_ganeval.images.to_uint8_rgb(images, value_range=...)"
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}; {hint}.")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 in [0, 255], got dtype {images.dtype}; {hint}.")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be laid out N x 3 x H x W, got shape {tuple(images.shape)}; {hint}.")


@contextlib.contextmanager
def feature_numerics(device: torch.device, *, allow_tf32: bool) -> Iterator[None]:
    """How every feature network runs: no autograd, no autocast (a bf16-mixed Trainer must not change the
    features), and on CUDA TF32 only if ``allow_tf32`` (the global flags are restored afterwards)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        if device.type == "cuda":
            saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            stack.callback(_restore_tf32, saved)
            torch.backends.cuda.matmul.allow_tf32 = allow_tf32
            torch.backends.cudnn.allow_tf32 = allow_tf32
        if device.type in ("cuda", "cpu"):
            stack.enter_context(torch.autocast(device.type, enabled=False))
        yield


def _restore_tf32(saved: tuple[bool, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``allowed``, listing them (``name``: the argument as the user wrote it)."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.")


def resolve_weights_argument(
    weights: Any,
    resolve: Callable[[str | os.PathLike[str] | None], ResolvedWeights],
    *,
    name: str = "weights",
    kind: str = "a ResolvedWeights",
    what: str = "the official file",
) -> ResolvedWeights:
    """A network's ``weights=`` argument as a resolved file: kept if already resolved, else ``resolve(weights)``.

    Args:
        weights: A path, a :class:`~lightning_ganeval.weights.ResolvedWeights`, or ``None`` (find or download).
        resolve: The network's resolver (its spec, cache folder and download).
        name: The argument as the user wrote it, for the error message.
        kind: How the message names the resolved type.
        what: What ``None`` finds or downloads, for the message.
    """
    if isinstance(weights, ResolvedWeights):
        return weights
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a path, {kind} or None (find or download {what}), got {type(weights).__name__}."
        )
    return resolve(weights)


def pil_bicubic(images: Tensor, size: int) -> Tensor:
    """Pillow bicubic resize of uint8 N x 3 x H x W images to ``size`` x ``size``, uint8 on the CPU (the references'
    path: dgm-eval for DINOv2, the CMMD code for CLIP)."""
    import numpy as np
    from PIL import Image

    arrays = images.permute(0, 2, 3, 1).cpu().numpy()
    resized = [np.asarray(Image.fromarray(a, "RGB").resize((size, size), Image.Resampling.BICUBIC)) for a in arrays]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)


def load_tensor_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` of a weights file on the CPU with ``weights_only=True``: tensors and containers only.

    The reference loaders unpickle arbitrary objects; a file that is not a plain state dict fails here with a
    ValueError that names it (the command line recognises its wording).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"weights file {path} is not a plain PyTorch state dict (torch.load(weights_only=True) failed: {err})."
        ) from err


_SHARED: dict[tuple[Any, ...], nn.Module] = {}
_SHARED_LOCK = threading.Lock()


def shared_network(key: tuple[Any, ...], build: Callable[[], N]) -> N:
    """This process's one instance for ``key`` (class, device, weights digest, modes), built on first use.

    Networks are large (Inception 100 MB, CLIP 1.2 GB): metrics and callbacks that ask for the same one share it.
    The lock makes threads that ask at once build it once.
    """
    with _SHARED_LOCK:
        network = _SHARED.get(key)
        if network is None:
            network = _SHARED[key] = build()
    return network  # type: ignore[return-value]


class FeatureNetwork(nn.Module):
    """Base of the package's feature networks: always in eval mode, on one device, with fixed numerics.

    ``train()`` is a no-op (Lightning calls it on every submodule of a LightningModule), no parameter requires a
    gradient, and :meth:`_numerics` runs the forward without autograd, without autocast and, on CUDA, without
    TF32 unless ``allow_tf32``.

    Attributes:
        weights: The resolved weights file (its ``sha256`` identifies the weights).
        resize: The resize mode (how inputs of other sizes reach the network's input size).
        identity: What identifies the outputs, for cache keys and provenance.
        allow_tf32: Whether TF32 is allowed on CUDA.
        default_layer: The layer a statistics file describes when none is named.
    """

    default_layer = "features"
    weights: Any
    resize: str
    identity: str

    def __init__(self, *, allow_tf32: bool = False) -> None:
        super().__init__()
        self.allow_tf32 = bool(allow_tf32)
        # Follows .to() like any buffer; the device of an empty network too.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def _place(self, device: torch.device, **to_kwargs: Any) -> None:
        """Freeze the parameters, move everything to ``device`` (``to_kwargs``: e.g. a memory format), eval mode."""
        self.requires_grad_(False)
        self.to(device=device, **to_kwargs)
        super().train(False)

    def _register_normalisation(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Per-channel input normalisation ``(x / 255 - mean) / std`` (buffers ``mean``, ``std``: they follow .to())."""
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def _normalise(self, x: Tensor) -> Tensor:
        """``x`` in [0, 255] scaled to [0, 1] and normalised with :meth:`_register_normalisation`'s constants."""
        return ((x / 255) - self.mean) / self.std

    def _bicubic_input(
        self, images: Tensor, size: int, *, crop: Callable[[int, int], tuple[int, int, int]] | None = None
    ) -> Tensor:
        """The float32 N x 3 x ``size`` x ``size`` input on :attr:`device` of a network that reads bicubically resized,
        normalised images (DINOv2, CLIP): the ``preprocess`` of both.

        ``resize="pil"`` resizes with Pillow on the CPU (the references' path), anything else with torch's
        antialiased bicubic on :attr:`device`.

        Args:
            images: uint8 N x 3 x H x W.
            size: The network's input side.
            crop: ``(height, width) -> (top, left, side)``, the square each image is cut to first; ``None``: the
                whole image (resized to a square whatever its aspect ratio).
        """
        check_images(images)
        if crop is not None:
            top, left, side = crop(images.shape[-2], images.shape[-1])
            images = images[..., top : top + side, left : left + side]
        with self._numerics():
            if self.resize == "pil":
                x = pil_bicubic(images, size).to(self.device).float()
            else:
                x = images.to(self.device, non_blocking=True).float()
                x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
            return self._normalise(x)

    def _embed(
        self,
        images: Tensor,
        preprocess: Callable[[Tensor], Tensor],
        net: Callable[[Tensor], Tensor],
        num_features: int,
    ) -> Tensor:
        """float32 N x ``num_features`` ``net(preprocess(images))`` on :attr:`device`, without autograd history: the
        ``forward`` of the networks with a ``preprocess`` step (an empty batch does not reach ``net``)."""
        check_images(images)
        if images.shape[0] == 0:
            return torch.empty(0, num_features, device=self.device)
        x = preprocess(images)
        with self._numerics():
            return net(x).float()

    @property
    def device(self) -> torch.device:
        """The device of the network (inputs are moved there)."""
        return self._device_anchor.device

    def train(self, mode: bool = True) -> FeatureNetwork:
        """Stay in eval mode: Lightning calls ``train()`` on every submodule of a LightningModule."""
        return super().train(False)

    def _tf32(self) -> bool:
        """Whether TF32 is allowed on CUDA (a subclass may imply it, e.g. Inception's fast mode)."""
        return self.allow_tf32

    def _numerics(self) -> contextlib.AbstractContextManager[None]:
        return feature_numerics(self.device, allow_tf32=self._tf32())

    def _layer_name(self, layer: str | None) -> str:
        """The name a statistics file gives ``layer`` (``None``: :attr:`default_layer`)."""
        return self.default_layer if layer is None else layer

    def provenance(self, layer: str | None = None) -> dict[str, Any]:
        """What identifies statistics of ``layer`` of this network: identity, weights digest, resize, layer.

        Written into ``.npz`` files and checked against them (:func:`~lightning_ganeval.stats_files.load_stats`).
        """
        return _describe(self, self.identity, self._layer_name(layer))

    def extra_repr(self) -> str:
        return f"identity={self.identity!r}, device={self.device}"


def network_identity(network: nn.Module) -> str:
    """What identifies a feature network's outputs: its ``identity`` attribute, else class and weights digest.

    The identity goes into statistics cache keys and ``.npz`` provenance, so that statistics computed with another
    network (or other weights) are never reused.
    """
    identity = getattr(network, "identity", None)
    if isinstance(identity, str):
        return identity
    digest = hashlib.sha256()
    for key, tensor in sorted(network.state_dict().items()):
        digest.update(key.encode())
        buffer = io.BytesIO()
        torch.save(tensor.detach().cpu().contiguous(), buffer)
        digest.update(buffer.getvalue())
    cls = type(network)
    return f"{cls.__module__}.{cls.__qualname__}/{digest.hexdigest()[:16]}"


def network_provenance(network: nn.Module, layer: str | None = None) -> dict[str, Any]:
    """The provenance of statistics of ``network``'s ``layer``: the one description of a network's outputs.

    A :class:`FeatureNetwork` describes itself (:meth:`FeatureNetwork.provenance`). Any other module with a string
    ``identity`` (a stand-in) is described from the same attributes where it has them; one without is identified
    by a digest of its weights (:func:`network_identity`) and the layer alone.

    Args:
        network: The feature network.
        layer: The layer whose statistics are described; ``None``: the network's default (``"pool3"`` for a
            stand-in without a ``layer`` attribute, as for Inception).
    """
    if isinstance(network, FeatureNetwork):
        return network.provenance(layer)
    if layer is None:
        layer = getattr(network, "layer", "pool3")
    if isinstance(getattr(network, "identity", None), str):
        return _describe(network, network.identity, layer)
    return {"extractor": network_identity(network), "layer": layer}


def _describe(network: nn.Module, identity: str, layer: str) -> dict[str, Any]:
    weights = getattr(network, "weights", None)
    entries = {
        "extractor": identity,
        "weights_sha256": getattr(weights, "sha256", None),
        "resize": getattr(network, "resize", None),
        "fast": getattr(network, "fast", None),
        "layer": layer,
    }
    return {key: value for key, value in entries.items() if value is not None}
