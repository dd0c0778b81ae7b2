"""U-Net family: deepCR's U-Net, a plain U-Net, Cosmic-CoNN and the Attention U-Net.

All four are one configurable :class:`UNet`; the registry entries pin the study's settings.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import NORMS, AttentionGate, DoubleConv, SegmentationNet


class UNet(SegmentationNet):
    """Configurable U-Net (Ronneberger et al. 2015) returning per-pixel CR logits.

    Parameters
    ----------
    in_chans : int
        Input channels (1 for a single CCD frame).
    base_channels : int
        Channels at full resolution; doubled at each level down.
    depth : int
        Number of resolution levels (3 in deepCR's "3-32" models: 32, 64, 128 channels).
    norm : {"batch", "group", "none"}
        Normalisation after every convolution.
    groups : int
        GroupNorm groups (Cosmic-CoNN uses 8).
    conv_bias : bool
        Bias in the 3x3 convolutions (deepCR keeps it although a norm follows).
    up_kernel : int
        Kernel of the stride-2 transposed convolution that upsamples (2 as in deepCR, 3 for the
        plain U-Net of the study).
    attention : bool
        Put an Oktay attention gate on every skip connection (Attention U-Net).
    head_relu : bool
        Keep the ReLU between the last block and the 1x1 head (as deepCR). Without it the head sees
        signed features, so the logit has no ceiling: with the ReLU, a network may learn "CR = no
        feature active", and then every CR-like pixel, true or false, gets the same logit (the head's
        bias), which flattens the ROC curve at low false-positive rates.
    """

    def __init__(self, in_chans: int = 1, base_channels: int = 32, depth: int = 3, norm: str = "batch",
                 groups: int = 8, conv_bias: bool = True, up_kernel: int = 2, attention: bool = False,
                 head_relu: bool = True) -> None:
        super().__init__()
        if in_chans < 1 or base_channels < 1:
            raise ValueError(f"in_chans and base_channels must be positive, got {in_chans}, {base_channels}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (levels of the U-Net), got {depth}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        if up_kernel not in (2, 3):
            raise ValueError(f"up_kernel must be 2 or 3, got {up_kernel}")
        self.pad_multiple = 2 ** (depth - 1)
        # GroupNorm normalises over the whole input, so the output is not a local function of it.
        self.is_local = norm != "group"
        # Receptive-field radius of 3x3 convs over `depth` levels is below 7 * 2**(depth-1) + 4;
        # 8 * 2**(depth-1) is a safe margin and a multiple of the pooling grid.
        self.context_margin = 8 * 2 ** (depth - 1)
        channels = [base_channels * 2**i for i in range(depth)]

        self.encoder = nn.ModuleList()
        previous = in_chans
        for ch in channels:
            self.encoder.append(DoubleConv(previous, ch, norm, conv_bias, groups))
            previous = ch
        self.pool = nn.MaxPool2d(2)

        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.gates = nn.ModuleList()
        for coarse, fine in zip(channels[::-1][:-1], channels[::-1][1:]):
            # kernel 3 needs padding 1 and output_padding 1 to exactly double the size
            pad = 1 if up_kernel == 3 else 0
            self.upsamplers.append(nn.ConvTranspose2d(coarse, fine, up_kernel, stride=2, padding=pad,
                                                      output_padding=pad))
            if attention:
                self.gates.append(AttentionGate(fine, fine, fine // 2))
            self.decoder.append(DoubleConv(2 * fine, fine, norm, conv_bias, groups))
        if not head_relu:
            self.decoder[-1][-1] = nn.Identity()  # drop the block's final ReLU: signed features to the head
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for i, (up, block) in enumerate(zip(self.upsamplers, self.decoder)):
            x = up(x)
            skip = skips.pop()
            if self.gates:
                skip = self.gates[i](x, skip)
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


@register_model
def deepcr_unet(**kwargs) -> UNet:
    """deepCR U-Net 3-32 (Zhang & Bloom 2020): BatchNorm, transposed-conv upsampling."""
    return UNet(**{"base_channels": 32, "depth": 3, "norm": "batch", "conv_bias": True, **kwargs})


@register_model
def unet(**kwargs) -> UNet:
    """Plain U-Net 3-32: BatchNorm, bias-free convs, 3x3 transposed-conv upsampling."""
    return UNet(**{"base_channels": 32, "depth": 3, "norm": "batch", "conv_bias": False, "up_kernel": 3,
                   **kwargs})


@register_model
def cosmic_conn(**kwargs) -> UNet:
    """Cosmic-CoNN (Xu et al. 2023): deepCR 3-32 with GroupNorm(8), one norm module per conv."""
    return UNet(**{"base_channels": 32, "depth": 3, "norm": "group", "groups": 8, "conv_bias": False,
                   **kwargs})


@register_model
def att_unet(**kwargs) -> UNet:
    """Attention U-Net 3-32 (Oktay et al. 2018): attention gates on both skip connections."""
    return UNet(**{"base_channels": 32, "depth": 3, "norm": "batch", "conv_bias": False, "attention": True,
                   **kwargs})
