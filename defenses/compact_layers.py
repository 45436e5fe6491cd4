"""Compact layers of the CCN paper [P4 §4]: every input patch L2-normalized before the kernel.

`CompactConv2d` is the paper's two-branch module (Fig. 4): a plain convolution without bias,
divided by sqrt(all-ones k x k conv of the channel-wise sum of squares) + delta, the patch norm,
with the same stride, padding and dilation; then scaled by one learnable alpha and biased.
`CompactLinear` is its fully connected case: alpha * W x / (||x|| + delta) + b.
Zero padding counts as zeros in the norm (SPEC §4.2 [I]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not nan) gradient where sq == 0: all-zero patches are common after a ReLU."""
    positive = sq > 0
    return torch.where(positive, sq, torch.ones_like(sq)).sqrt() * positive


class CompactConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, *, alpha: float = 1.0, delta: float = 0.01, learn_alpha: bool = True):
        super().__init__()
        k = nn.modules.utils._pair(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride = nn.modules.utils._pair(stride)
        self.padding = padding if isinstance(padding, str) else nn.modules.utils._pair(padding)
        self.dilation = nn.modules.utils._pair(dilation)
        self.delta = float(delta)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.alpha = nn.Parameter(torch.tensor(float(alpha)), requires_grad=learn_alpha)
        # The all-ones k x k kernel of the norm branch: fixed, rebuilt from the shape (not checkpointed).
        self.register_buffer("ones", torch.ones(1, 1, *k), persistent=False)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, alpha: float, delta: float, learn_alpha: bool) -> CompactConv2d:
        if conv.groups != 1:
            raise ValueError("compact convolution needs groups=1: a patch spans all input channels")
        if conv.padding_mode != "zeros":
            raise ValueError(f"compact convolution supports zero padding only (got {conv.padding_mode!r})")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  bias=conv.bias is not None, alpha=alpha, delta=delta, learn_alpha=learn_alpha)
        new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new

    def patch_norm(self, x: torch.Tensor) -> torch.Tensor:
        """||patch||_2 + delta at every output position, shape (B, 1, H', W'); float32 even under autocast
        (a sum of squares over a 3x3x64 patch overflows float16 at an RMS of about 10)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            sq = F.conv2d(x.pow(2).sum(1, keepdim=True), self.ones.float(), None, self.stride, self.padding,
                          self.dilation)
            return _safe_sqrt(sq) + self.delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)
        out = out * (self.alpha / self.patch_norm(x)).to(out.dtype)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, delta={self.delta}, alpha={float(self.alpha.detach()):.4g}")


class CompactLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, alpha: float = 1.0,
                 delta: float = 0.01, learn_alpha: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.delta = float(delta)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.alpha = nn.Parameter(torch.tensor(float(alpha)), requires_grad=learn_alpha)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, alpha: float, delta: float, learn_alpha: bool) -> CompactLinear:
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, alpha=alpha, delta=delta,
                  learn_alpha=learn_alpha).to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(linear.weight)
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            norm = _safe_sqrt(x.float().pow(2).sum(-1, keepdim=True)) + self.delta
        return F.linear(x * (self.alpha / norm).to(x.dtype), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, delta={self.delta}, alpha={float(self.alpha.detach()):.4g}"


def fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    return module.in_features


def l2_softmax_alpha(num_classes: int, p: float = 0.99) -> float:
    """Ranjan et al.'s lower bound on the feature norm for an average class probability p."""
    if num_classes <= 2:
        return math.log(p / (1 - p))
    return math.log(p * (num_classes - 2) / (1 - p))
