"""Weight-only int8 linear layers: int8 weights, one float scale per output channel, dequantized in `forward`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INT8_MAX = 127  # symmetric: -127..127, so that w and -w quantize alike


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (q int8 (out, in), scale (out,) in the weight's dtype), w ≈ q · scale[:, None].

    Symmetric per output channel: scale = max |w_row| / 127 (a zero row gets scale 1), q = round(w / scale)."""
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_weight takes a float (out, in) matrix; got {weight.dtype} {tuple(weight.shape)}")
    w = weight.detach().to(torch.float32, copy=True)  # one copy, worked in place (a flan-ul2 layer: 268 M weights)
    low, high = torch.aminmax(w, dim=1)
    peak = torch.maximum(-low, high)  # (out,)
    scale = torch.where(peak > 0, peak / INT8_MAX, torch.ones_like(peak))
    q = w.div_(scale[:, None]).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale.to(weight.dtype)


class Int8Linear(nn.Module):
    """y = (x @ q^T) · scale + bias: `nn.Linear` with its weight held as int8 `q` (out, in) and a scale per
    output channel; `weight` is the int8 tensor (transformers' T5 reads its dtype), `scale` and `bias` float."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        """The int8 counterpart of a float `nn.Linear` (same device; scale and bias in its dtype)."""
        weight = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype=weight.dtype,
                    device=weight.device)
        layer.weight, layer.scale = quantize_weight(weight)
        if linear.bias is not None:
            layer.bias.data = linear.bias.detach().clone()
        return layer

    def dequantized(self) -> torch.Tensor:
        """The float (out, in) weight this layer computes with."""
        return self.weight.to(self.scale.dtype) * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)  # (..., out); integers exact in bf16
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def quantize_linears(module: nn.Module) -> int:
    """Replace every float `nn.Linear` inside `module` with an `Int8Linear`, in place, one at a time (each float
    weight is freed as soon as its int8 copy exists); the number replaced."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.is_floating_point():
                setattr(parent, name, Int8Linear.from_linear(child))
                count += 1
    return count


def is_quantized(module: nn.Module) -> bool:
    """Whether `module` holds any `Int8Linear`."""
    return any(isinstance(child, Int8Linear) for child in module.modules())


def weight_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` (shared tensors once)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.data_ptr() in seen and tensor.numel():
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total
