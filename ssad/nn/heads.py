"""Projection heads of self-supervised methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead", "WeightNormLinear"]


class WeightNormLinear(nn.Module):
    """A bias-free linear layer with weight normalisation: ``W[i] = g[i] * v[i] / ||v[i]||``.

    The same reparametrisation as :func:`torch.nn.utils.weight_norm` with
    ``dim=0`` (one norm per output unit), written out so that it pickles,
    deep-copies and loads DINO checkpoints (keys ``weight_g`` and
    ``weight_v``) without torch's deprecated or parametrised variants.

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes.

    Attributes
    ----------
    weight_g : torch.nn.Parameter of shape (out_features, 1)
        Norm of each output unit's weight vector (initialised to 1).
    weight_v : torch.nn.Parameter of shape (out_features, in_features)
        Direction of each output unit's weight vector.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        linear = nn.Linear(in_features, out_features, bias=False)  # its default init for v
        self.weight_v = nn.Parameter(linear.weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight ``g * v / ||v||`` (rows of norm ``g``)."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.weight_v.shape[1]}, out_features={self.weight_v.shape[0]}"


class DINOHead(nn.Module):
    """DINO's projection head: MLP, L2 normalisation, weight-normalised linear layer.

    ``x -> MLP (n_layers linear layers, GELU between them) -> bottleneck_dim
    -> L2-normalise -> WeightNormLinear -> out_dim`` logits over ``out_dim``
    soft classes (Caron et al., 2021).

    Parameters
    ----------
    in_dim : int
        Size of the backbone embedding.
    out_dim : int
        Number of soft classes K (logits).
    hidden_dim : int, default=2048
        Width of the hidden MLP layers.
    bottleneck_dim : int, default=256
        Output size of the MLP, before the L2 normalisation.
    n_layers : int, default=3
        Linear layers in the MLP (1 = a single linear map to ``bottleneck_dim``).
    use_bn : bool, default=False
        Batch normalisation after each hidden linear layer.
    norm_last_layer : bool, default=True
        Freeze the norms ``g`` of the last layer at 1, so that its rows stay
        unit vectors (DINO's default; more stable, slightly worse for ViT-S
        according to the DINO authors).

    Examples
    --------
    >>> import torch
    >>> from ssad.nn import DINOHead
    >>> head = DINOHead(64, 16, hidden_dim=32, bottleneck_dim=8)
    >>> head(torch.randn(4, 64)).shape
    torch.Size([4, 16])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        n_layers = max(int(n_layers), 1)
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(b, out_dim)`` of embeddings ``x`` ``(b, in_dim)``."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        out: torch.Tensor = self.last_layer(x)
        return out
