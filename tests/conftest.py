"""Test configuration: no network, small thread pools, shared tiny data."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SSAD_CACHE", os.path.join(os.path.dirname(__file__), ".cache"))

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tiny models: threading costs more than it gives


@pytest.fixture
def rgb_images() -> np.ndarray:
    """Twelve random RGB uint8 images of 32x32."""
    return np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
