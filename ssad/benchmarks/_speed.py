"""The estimators of the ``speed`` preset: the embedder against a plain timm inference loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin

from ssad.backbones import create_backbone, data_config
from ssad.benchmarks._registry import _knn_on, register_estimator
from ssad.features import DINOFeatures

__all__ = ["PlainTimmLoop"]

#: The model timed by the ``speed`` preset (random weights: speed does not depend on them).
SPEED_BACKBONE = "vit_small_patch16_224"


class PlainTimmLoop(TransformerMixin, BaseEstimator):
    """Class tokens of a timm model from a plain inference loop: the speed reference.

    What a user would write by hand: uint8 ``(n, H, W)`` images, resized and
    normalised in torch, one forward per batch under ``inference_mode``.

    Parameters
    ----------
    backbone : str, default="vit_small_patch16_224"
        timm model (random weights).
    batch_size : int, default=64
        Images per forward pass.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks._speed import PlainTimmLoop
    >>> X = np.zeros((2, 8, 8), dtype=np.uint8)
    >>> PlainTimmLoop("test_vit").fit(X).transform(X).shape
    (2, 64)
    """

    def __init__(self, backbone: str = SPEED_BACKBONE, batch_size: int = 64) -> None:
        self.backbone = backbone
        self.batch_size = batch_size

    def fit(self, X: Any, y: Any = None) -> PlainTimmLoop:
        """Create the model."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model_ = create_backbone(self.backbone, pretrained=False)
        cfg = data_config(self.model_)
        self.size_ = tuple(cfg["input_size"][-2:])
        self.mean_ = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std_ = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Class token of every image, float32 ``(n, d)``."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(X), self.batch_size):
                x = torch.from_numpy(np.asarray(X[start : start + self.batch_size]))
                x = x.float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
                x = F.interpolate(x, size=self.size_, mode="bicubic", align_corners=False)
                tokens = getattr(self.model_, "forward_features")((x - self.mean_) / self.std_)  # noqa: B009
                out.append(tokens[:, 0])
        return torch.cat(out).numpy()


register_estimator(
    "speed-dino",
    lambda: _knn_on(DINOFeatures(SPEED_BACKBONE, pretrained=False, random_state=0)),
    description="speed preset: DINOFeatures ViT-S/16 (random weights) + kNN",
)
register_estimator(
    "speed-plain-loop",
    lambda: _knn_on(PlainTimmLoop()),
    description="speed preset: the same ViT-S/16 in a plain timm loop + kNN",
)
