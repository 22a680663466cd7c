"""Plain ``nn.Module`` building blocks of the self-supervised detectors."""

from ssad.nn.ema import update_ema
from ssad.nn.heads import DINOHead, WeightNormLinear
from ssad.nn.losses import DINOLoss, UniformLoss

__all__ = ["DINOHead", "DINOLoss", "UniformLoss", "WeightNormLinear", "update_ema"]
