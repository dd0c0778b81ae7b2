"""Small TransUNets: CNN encoder + ViT bottleneck + cascaded upsampler (Chen et al. 2021).

The study's variants share a hidden size of 60 and differ in heads, layers and MLP width; those are
constructor arguments, so a new row of the study is one registry entry.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .layers import NORMS, DoubleConv, SegmentationNet, get_norm


class TransformerBlock(nn.Module):
    """Pre-norm ViT encoder block (Dosovitskiy et al. 2021): x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden_size), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attn_norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.mlp_norm(x))


class TransUNet(SegmentationNet):
    """TransUNet for single-channel CR segmentation.

    The CNN encoder (three U-Net blocks, two max-pools) gives skips at 1, 1/2 and 1/4 resolution; a
    2x2 stride-2 patch embedding turns the 1/4 features into tokens at 1/8 resolution, a ViT encoder
    mixes them globally, and the cascaded upsampler (CUP) decodes back through the skips.

    Parameters
    ----------
    in_chans : int
        Input channels.
    hidden_size : int
        Transformer width (60 in the study).
    num_layers, num_heads, mlp_dim : int
        Transformer depth, attention heads (must divide ``hidden_size``) and MLP width.
    encoder_channels : tuple of int
        Channels of the three CNN encoder stages.
    decoder_channels : tuple of int
        Channels of the CUP: the first after the token-to-map convolution, then one per upsampling.
    pos_grid : int
        Side of the learned position-embedding grid; it is bilinearly interpolated to the token grid
        of any input, so the model runs on frames of any size.
    norm : str
        Normalisation of the CNN parts.
    dropout : float
        Dropout in the transformer.
    """

    pad_multiple = 8
    is_local = False  # self-attention mixes every token of the input

    def __init__(self, in_chans: int = 1, hidden_size: int = 60, num_layers: int = 6, num_heads: int = 6,
                 mlp_dim: int = 64, encoder_channels: tuple[int, int, int] = (16, 32, 64),
                 decoder_channels: tuple[int, int, int, int] = (76, 60, 40, 20), pos_grid: int = 16,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if min(num_layers, num_heads, mlp_dim, pos_grid) < 1:
            raise ValueError("num_layers, num_heads, mlp_dim and pos_grid must be positive")
        if len(encoder_channels) != 3 or len(decoder_channels) != 4:
            raise ValueError("encoder_channels needs 3 entries and decoder_channels 4")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        self.num_heads, self.num_layers, self.mlp_dim = num_heads, num_layers, mlp_dim
        c0, c1, c2 = encoder_channels
        self.encoder = nn.ModuleList([DoubleConv(in_chans, c0, norm, False), DoubleConv(c0, c1, norm, False),
                                      DoubleConv(c1, c2, norm, False)])
        self.pool = nn.MaxPool2d(2)
        self.patch_embed = nn.Conv2d(c2, hidden_size, 2, stride=2)
        self.pos_embed = nn.Parameter(torch.zeros(1, hidden_size, pos_grid, pos_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_size, num_heads, mlp_dim, dropout)
                                    for _ in range(num_layers))
        self.encoder_norm = nn.LayerNorm(hidden_size)

        d0, d1, d2, d3 = decoder_channels
        # the tokens back as a map: its norm is the model's too (it was always BatchNorm, so norm="group" kept one)
        self.conv_more = nn.Sequential(nn.Conv2d(hidden_size, d0, 3, padding=1, bias=False),
                                       get_norm(norm, d0), nn.ReLU(inplace=True))
        self.decoder = nn.ModuleList([DoubleConv(d0 + c2, d1, norm, False), DoubleConv(d1 + c1, d2, norm, False),
                                      DoubleConv(d2 + c0, d3, norm, False)])
        self.head = nn.Conv2d(d3, 1, 3, padding=1)

    def tokens(self, features: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch-embed 1/4-resolution features, add interpolated position embeddings, run the ViT."""
        x = self.patch_embed(features)
        h, w = x.shape[-2:]
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        x = (x + pos).flatten(2).transpose(1, 2)  # (N, h*w, hidden)
        for block in self.blocks:
            x = block(x)
        return self.encoder_norm(x), (h, w)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        tokens, (h, w) = self.tokens(x)
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        x = self.conv_more(x)
        for block in self.decoder:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)


def _tunet(num_heads: int, num_layers: int, mlp_dim: int, kwargs: dict) -> TransUNet:
    return TransUNet(**{"hidden_size": 60, "num_heads": num_heads, "num_layers": num_layers, "mlp_dim": mlp_dim,
                        **kwargs})


@register_model
def tunet_2(**kwargs) -> TransUNet:
    """TransUNet, hidden 60, 12 heads, 12 layers, MLP 100."""
    return _tunet(12, 12, 100, kwargs)


@register_model
def tunet_3(**kwargs) -> TransUNet:
    """TransUNet, hidden 60, 6 heads, 6 layers, MLP 100."""
    return _tunet(6, 6, 100, kwargs)


@register_model
def tunet_4(**kwargs) -> TransUNet:
    """TransUNet, hidden 60, 6 heads, 6 layers, MLP 64."""
    return _tunet(6, 6, 64, kwargs)


@register_model
def tunet_5(**kwargs) -> TransUNet:
    """TransUNet, hidden 60, 6 heads, 6 layers, MLP 128."""
    return _tunet(6, 6, 128, kwargs)


@register_model
def tunet_6(**kwargs) -> TransUNet:
    """TransUNet, hidden 60, 6 heads, 8 layers, MLP 64."""
    return _tunet(6, 8, 64, kwargs)


@register_model
def tunet_9(**kwargs) -> TransUNet:
    """TransUNet, hidden 60, 12 heads, 6 layers, MLP 64."""
    return _tunet(12, 6, 64, kwargs)
