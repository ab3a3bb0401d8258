"""The layers the model families are built from; each `forward` calls the kernel backend.

`ops` is the namespace `engine.backend.get_ops` returns (Triton kernels or their torch
twins, unchecked). A new family composes these with `engine.attention.PagedAttention` /
`EncoderAttention` and the parallel linears of `engine.distributed.layers` (plain linears at
tensor_parallel_size 1), and maps its checkpoint names in `load_weights`.

Norms fuse the residual add: with a residual, `norm(x, residual)` returns
(normalized(x + residual), x + residual), so a pre-norm block carries its residual stream
through the next norm without a separate add. `RMSNorm.linear` goes one step further and
fuses the norm into the projection that reads it (`ops.rms_norm_linear`: one GEMM launch
on the triton backend, rms_norm then F.linear on the torch one).
"""
import torch
import torch.nn.functional as F
from torch import nn

from engine.distributed.layers import ColumnParallelLinear, RowParallelLinear
from engine.distributed.parallel import SINGLE, TensorParallel
from engine.models.rope import rope_tables_from_config

# HF activation names -> (kernel, GELU approximation)
ACTIVATIONS = {
    "gelu": ("gelu", "none"),
    "gelu_new": ("gelu", "tanh"),
    "gelu_pytorch_tanh": ("gelu", "tanh"),
    "relu": ("relu", None),
}


def check_activation(name: str, field: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"{field} must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return name


class RMSNorm(nn.Module):
    def __init__(self, ops, hidden: int, eps: float):
        super().__init__()
        self.ops, self.eps = ops, eps
        self.weight = nn.Parameter(torch.ones(hidden), requires_grad=False)

    def forward(self, x, residual=None):
        return self.ops.rms_norm(x, self.weight, self.eps, residual)

    def linear(self, x, weight, bias=None, residual=None):
        """F.linear(self(x, residual), weight, bias) as one op, for x [T, hidden] and the
        following projection's weight [N, hidden] (this rank's columns under tensor
        parallelism: the input is replicated, so the fusion holds per rank). Returns y, or
        (y, x + residual) with a residual."""
        return self.ops.rms_norm_linear(x, self.weight, self.eps, weight, bias, residual)


class LayerNorm(nn.Module):
    def __init__(self, ops, hidden: int, eps: float):
        super().__init__()
        self.ops, self.eps = ops, eps
        self.weight = nn.Parameter(torch.ones(hidden), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(hidden), requires_grad=False)

    def forward(self, x, residual=None):
        return self.ops.layer_norm(x, self.weight, self.bias, self.eps, residual)


class Activation(nn.Module):
    """An elementwise activation by its HF name (gelu, gelu_new, relu, ...)."""

    def __init__(self, ops, name: str):
        super().__init__()
        self.ops = ops
        self.kind, self.approximate = ACTIVATIONS[name]

    def forward(self, x):
        if self.kind == "gelu":
            return self.ops.gelu(x, approximate=self.approximate)
        return F.relu(x)


class MLP(nn.Module):
    """fc_out(act(fc_in(x))): GPT-2's and BERT's feed-forward (inner features split across ranks)."""

    def __init__(self, ops, hidden: int, inner: int, activation: str, bias: bool = True,
                 tp: TensorParallel = SINGLE):
        super().__init__()
        self.fc_in = ColumnParallelLinear(hidden, (inner,), bias, tp, what="MLP features")
        self.act = Activation(ops, activation)
        self.fc_out = RowParallelLinear(inner, hidden, bias, tp, what="MLP features")

    def forward(self, x):
        return self.fc_out(self.act(self.fc_in(x)))


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up fused in one matmul (SwiGLU); each rank
    holds its slice of gate and of up, side by side. The caller runs `gate_up_proj` (fused
    with the norm before it, `RMSNorm.linear`) and passes its output to `forward`."""

    def __init__(self, ops, hidden: int, inner: int, bias: bool = False, tp: TensorParallel = SINGLE):
        super().__init__()
        self.ops = ops
        self.gate_up_proj = ColumnParallelLinear(hidden, (inner, inner), bias, tp, what="MLP features")
        self.down_proj = RowParallelLinear(inner, hidden, bias, tp, what="MLP features")

    def forward(self, gate_up):
        """gate_up [T, 2 * inner] = gate_up_proj(x) -> [T, hidden]."""
        return self.down_proj(self.ops.silu_and_mul(gate_up))


class RotaryTables:
    """The fp32 cos/sin tables [max_positions, D / 2] of a rotary model, shared by its layers.

    Built on the CPU at construction, so an unsupported rope scaling fails when the model is
    built, even inside a meta-device context; moved to the activations' device on first use.
    """

    def __init__(self, hf_config):
        with torch.device("cpu"):
            self.cos, self.sin = rope_tables_from_config(hf_config, "cpu")

    def get(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cos.device != device:
            self.cos, self.sin = self.cos.to(device), self.sin.to(device)
        return self.cos, self.sin
