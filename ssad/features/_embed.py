"""The one embedder of ssad: images -> backbone -> pooling -> float32 numpy, batch by batch.

Every estimator that turns images into vectors goes through this module:
:class:`~ssad.TimmFeatures` and every deep detector.  Two layers:

:func:`backbone_features`
    one batch tensor -> pooled features, differentiable (training losses call
    it with gradients on); the pooling vocabulary lives here.
:func:`embed_images`
    the inference loop over an :class:`~ssad._images.ImageSet`: load, resize
    and normalise each batch, run a batch function under
    :func:`torch.inference_mode` and autocast, gather float32 numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ssad._images import ImageSet, Preprocessor
from ssad.backbones import autocast

__all__ = [
    "POOLINGS",
    "backbone_features",
    "embed_images",
    "feature_grids",
    "forward_features",
    "resolve_pooling",
    "token_grid",
    "token_layout",
    "tokens_to_grid",
]

#: The pooling vocabulary of the embedder, the feature extractors and the detectors.
#:
#: ``"cls"``: the class token; ``"mean"``: the mean of the patch tokens (global
#: average pooling for CNNs); ``"cls+mean"``: both, concatenated; ``"tokens"``:
#: every output token (every position of a CNN's map) flattened into one
#: vector, as the Gasoyan thesis does before PCA; ``"auto"``: ``"cls"`` for
#: models with a class token, else ``"mean"``.
POOLINGS = ("auto", "cls", "mean", "cls+mean", "tokens")


def token_layout(model: nn.Module) -> int | None:
    """Number of prefix (class/register) tokens of a token model, None for CNNs."""
    n = getattr(model, "num_prefix_tokens", None)
    return int(n) if n is not None else None


def resolve_pooling(model: nn.Module, pooling: str) -> str:
    """The concrete pooling of ``pooling`` for ``model`` (``"auto"`` resolved).

    Raises
    ------
    ValueError
        If ``pooling`` is unknown, or needs a class token ``model`` lacks.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}. Got {pooling!r} instead.")
    has_cls = bool(token_layout(model))
    if pooling == "auto":
        return "cls" if has_cls else "mean"
    if "cls" in pooling and not has_cls:
        raise ValueError(
            f"pooling={pooling!r} needs a model with a class token, but {type(model).__name__} "
            "has none; use pooling='mean' (global average pooling) or 'auto'."
        )
    return pooling


def forward_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model.forward_features(x)``: tokens ``(b, n, d)`` or maps ``(b, c, h, w)``."""
    out: torch.Tensor = getattr(model, "forward_features")(x)  # noqa: B009 - timm API, untyped
    return out


def _pool(feats: torch.Tensor, prefix: torch.Tensor | None, pooling: str) -> list[torch.Tensor]:
    """Pool one output: ``feats`` is a map ``(b, c, h, w)``, ``prefix`` its prefix tokens."""
    if pooling == "tokens":
        parts = [] if prefix is None else [prefix.flatten(1)]
        return [*parts, feats.flatten(2).transpose(1, 2).flatten(1)]
    parts = []
    if "cls" in pooling:
        assert prefix is not None
        parts.append(prefix[:, 0])
    if "mean" in pooling:
        parts.append(feats.mean(dim=(2, 3)))
    return parts


def _as_map(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split the output of ``forward_features`` into a map ``(b, d, h, w)`` and prefix tokens."""
    if tokens.ndim == 4:
        return tokens, None
    n_prefix = token_layout(model) or 0
    prefix, patches = tokens[:, :n_prefix], tokens[:, n_prefix:]
    b, n, d = patches.shape
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    h, w = (int(grid[0]), int(grid[1])) if grid is not None else (n, 1)
    if h * w != n:  # dynamic input size: a square grid
        h = w = round(n**0.5)
        if h * w != n:
            h, w = n, 1
    return patches.transpose(1, 2).reshape(b, d, h, w), (prefix if n_prefix else None)


def backbone_features(
    model: nn.Module,
    x: torch.Tensor,
    pooling: str = "auto",
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Pooled features ``(b, d)`` of a model-ready batch; differentiable.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model without classifier (:func:`ssad.backbones.create_backbone`).
    x : torch.Tensor
        Normalised model input ``(b, 3, h, w)``.
    pooling : str, default="auto"
        One of :data:`POOLINGS`.
    layers : sequence of int, optional
        Block indices (negative counts from the end).  Without it the final
        (normalised) output is pooled; with it, the raw outputs of these
        blocks are pooled and concatenated in order.

    Returns
    -------
    torch.Tensor
        The features, in the dtype the model computed them in.
    """
    pooling = resolve_pooling(model, pooling)
    if layers is None:
        outputs = [_as_map(model, forward_features(model, x))]
    else:
        kwargs = {"return_prefix_tokens": True} if token_layout(model) else {}
        intermediates = getattr(model, "forward_intermediates")  # noqa: B009 - timm API
        outs = intermediates(x, indices=list(layers), intermediates_only=True, **kwargs)
        outputs = [out if isinstance(out, tuple) else (out, None) for out in outs]
    return torch.cat([part for out in outputs for part in _pool(*out, pooling)], dim=1)


def token_grid(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The unpooled patch grid ``(b, d, h, w)`` of the final output (prefix tokens dropped)."""
    return _as_map(model, forward_features(model, x))[0]


def tokens_to_grid(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A block output of ``model`` as a patch grid ``(b, d, h, w)``.

    Token outputs ``(b, n, d)`` lose their prefix (class / register) tokens and
    are laid out on the model's patch grid; CNN maps ``(b, c, h, w)`` pass
    through unchanged.
    """
    return _as_map(model, tokens)[0]


def feature_grids(model: nn.Module, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """Unpooled outputs ``(b, c, h, w)`` of intermediate stages of a timm model; differentiable.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model with ``forward_intermediates``.
    x : torch.Tensor
        Normalised model input ``(b, 3, h, w)``.
    layers : sequence of int
        Indices of ``forward_intermediates``: feature levels of CNNs
        (ResNets: 1-4 are ``layer1``-``layer4``; EfficientNets: the stages
        at strides 4, 8, 16, 32), blocks of ViTs (negative counts from the
        end).  The forward pass stops after the last one.

    Returns
    -------
    list of torch.Tensor
        One map per index, in the order given; prefix tokens of ViTs are
        dropped.

    Examples
    --------
    >>> import torch
    >>> from ssad.backbones import create_backbone
    >>> from ssad.features import feature_grids
    >>> net = create_backbone("test_resnet", pretrained=False)
    >>> [tuple(g.shape) for g in feature_grids(net, torch.zeros(1, 3, 64, 64), [2, 3])]
    [(1, 48, 8, 8), (1, 192, 4, 4)]
    """
    intermediates = getattr(model, "forward_intermediates")  # noqa: B009 - timm API
    outs = intermediates(x, indices=list(layers), intermediates_only=True, stop_early=True)
    return [out[0] if isinstance(out, tuple) else out for out in outs]


def embed_images(
    images: ImageSet,
    fn: Callable[[torch.Tensor], torch.Tensor],
    preprocessor: Preprocessor,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "auto",
    normalize: bool = False,
    num_workers: int = 0,
    verbose: int = 0,
    desc: str = "embed",
) -> np.ndarray:
    """Run ``fn`` over every image, batch by batch, and gather the results.

    This is the only inference loop of ssad: batches are loaded, resized and
    normalised by ``preprocessor`` on ``device``, ``fn`` runs under
    :func:`torch.inference_mode` and autocast, and its output (any shape with
    the batch first) becomes rows of a float32 array.  The modules ``fn`` uses
    must be in eval mode (the training loop leaves them so).

    Parameters
    ----------
    images : ImageSet
        Validated images (:func:`ssad._images.check_images`).
    fn : callable
        ``fn(x) -> Tensor (b, ...)`` on a model-ready batch, e.g.
        ``lambda x: backbone_features(model, x, "cls")``.
    preprocessor : ssad._images.Preprocessor
        Resize and normalisation of the model.
    batch_size : int
        Images per forward pass.
    device : torch.device
        Where the model runs.
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype (:func:`ssad.backbones.autocast`).
    normalize : bool, default=False
        L2-normalise each row of a ``(b, d)`` output (in float32).
    num_workers : int, default=0
        Image files are decoded and resized in this many DataLoader worker
        processes, ahead of the model (:meth:`ssad._images.ImageSet.load_batches`).
    verbose : int, default=0
        Progress bar when > 0.
    desc : str, default="embed"
        Progress-bar label.

    Returns
    -------
    ndarray of shape (n_images, ...), dtype float32
        The outputs of ``fn``, in the order of ``images``.
    """
    out: np.ndarray | None = None
    start = 0
    with (
        torch.inference_mode(),
        tqdm(total=len(images), disable=verbose <= 0, desc=desc, unit="img") as bar,
    ):
        for x in preprocessor.batches(images, batch_size, device, num_workers):
            with autocast(device, precision):
                z = fn(x)
            z = z.float()
            if normalize:
                z = F.normalize(z, dim=1)
            z_np = z.cpu().numpy()
            if out is None:
                out = np.empty((len(images), *z_np.shape[1:]), dtype=np.float32)
            out[start : start + len(z_np)] = z_np
            start += len(z_np)
            bar.update(len(z_np))
    assert out is not None  # an ImageSet holds at least one image
    return out
