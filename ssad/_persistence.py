"""Pickling of estimators that hold torch modules.

Fitted modules are saved as CPU state dicts, never as pickled module objects,
and rebuilt on load from the estimator's own parameters.  An estimator fitted
on CUDA therefore loads on a machine without a GPU (it then runs on the CPU).
:func:`ssad.save` stores the same state (``__getstate__``) in a format that
cannot run code.

Pickle files can run any code when they are loaded: unpickle only files you
trust, and share models with :func:`ssad.save` / :func:`ssad.load`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["TorchStateMixin"]


class TorchStateMixin:
    """Pickle fitted ``nn.Module`` attributes as state dicts.

    A class using it implements ``_build_modules() -> dict[str, nn.Module]``,
    which creates the fitted modules' architecture (no pretrained weights)
    from the estimator's parameters and fitted attributes.  Every attribute
    that holds an ``nn.Module`` at pickling time is stored as a CPU state
    dict; on unpickling the modules are rebuilt (without touching the global
    torch RNG), the weights loaded, and the modules moved to ``device_`` (or
    the CPU when that device is missing).
    """

    def _build_modules(self) -> dict[str, nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # type: ignore[misc]  # never mutate __dict__
        modules = {k: v for k, v in state.items() if isinstance(v, nn.Module)}
        for key, module in modules.items():
            state[key] = None
            state.setdefault("_module_states", {})[key] = {
                name: tensor.detach().cpu() for name, tensor in module.state_dict().items()
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        module_states = state.pop("_module_states", {})
        super().__setstate__(state)  # type: ignore[misc]
        if not module_states:
            return
        device = getattr(self, "device_", torch.device("cpu"))
        if not _available(device):
            logger.warning("Device %s is not available here; the estimator runs on cpu.", device)
            device = torch.device("cpu")
            self.device_ = device
        with torch.random.fork_rng(devices=[]):  # architecture only: leave the global RNG alone
            built = self._build_modules()
        for key, sd in module_states.items():
            module = built[key]
            module.load_state_dict(sd)
            setattr(self, key, module.to(device).eval())


def _available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return True
