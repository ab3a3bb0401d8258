"""How a model's parameters are found in a Hugging Face checkpoint: one WeightSource per
parameter (several fused tensors, or a transposed one), checked against its shape.

Under tensor parallelism a parameter may hold only a slice of its checkpoint tensors: the
module that owns it says which through `shard_of(leaf) -> Shard | None`
(engine.distributed.layers), and only that slice is read. The checkpoint's tensors may be
torch tensors or lazily read ones (the loader's, which read a slice from the file on
indexing): both answer `.shape` and `[index]`.
"""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Shard:
    """The part of a parameter one rank holds: the [start, stop) `ranges` along `dim` of the
    full parameter (whose size along `dim` is `full`), concatenated in order. Zero rows pad it
    to the rank's size when the ranks do not divide the dimension (a vocabulary)."""

    dim: int
    full: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class WeightSource:
    """Where one model parameter comes from in a HF checkpoint.

    `names` are concatenated along dim 0 (fused q/k/v or gate/up projections); `transpose`
    turns GPT-2's Conv1D [in, out] layout into the [out, in] layout F.linear expects.
    """

    names: tuple[str, ...]
    transpose: bool = False

    def _read(self, tensor, dim=0, start=None, stop=None):
        """[start, stop) along `dim` of our layout of one checkpoint tensor (all by default)."""
        stored_dim = 1 - dim if self.transpose else dim
        part = tensor[(slice(None),) * stored_dim + (slice(start, stop),)]
        return part.t() if self.transpose else part

    def shape(self, weights) -> tuple | None:
        """The full parameter's shape, or None when the named tensors cannot be concatenated."""
        shapes = [tuple(weights[n].shape) for n in self.names]
        if self.transpose:
            shapes = [s[::-1] for s in shapes]
        if any(s[1:] != shapes[0][1:] for s in shapes) or not shapes[0]:
            return None
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def build(self, weights, shard: Shard | None = None):
        """The parameter's tensor, or only the rows/columns `shard` names."""
        if shard is None:
            parts = [self._read(weights[n]) for n in self.names]
            return (parts[0] if len(parts) == 1 else torch.cat(parts)).contiguous()
        if shard.dim != 0:  # each named tensor sliced across, then stacked as usual
            parts = [torch.cat([self._read(weights[n], shard.dim, a, b) for a, b in shard.ranges], shard.dim)
                     for n in self.names]
            return torch.cat(parts).contiguous()
        parts, offset = [], 0
        for name in self.names:  # the ranges index the names' rows laid end to end
            tensor = weights[name]
            rows = tensor.shape[1 if self.transpose else 0]
            for a, b in shard.ranges:
                lo, hi = max(a, offset), min(b, offset + rows)
                if lo < hi:
                    parts.append(self._read(tensor, 0, lo - offset, hi - offset))
            offset += rows
        return torch.cat(parts).contiguous()


def _format(names):
    names = sorted(names)
    shown = ", ".join(names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _padded(tensor, dim, size):
    """tensor with zero rows appended along `dim` up to `size`."""
    missing = size - tensor.shape[dim]
    if missing <= 0:
        return tensor
    pad_shape = list(tensor.shape)
    pad_shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(pad_shape)], dim)


def load_hf_weights(module: nn.Module, weights: dict, sources: dict, ignored=lambda n: False):
    """Make each parameter of `module` the checkpoint tensor(s) `sources[param]` names.

    weights: HF name -> tensor (read in the target dtype and device). Raises ValueError
    naming missing or unexpected checkpoint tensors, or a shape that does not fit; names
    for which `ignored(name)` is true (non-weight buffers some checkpoints carry) are skipped.
    Parameters named by the same source list (and slice) share one tensor (tied embeddings).
    """
    params = dict(module.named_parameters(remove_duplicate=False))
    if set(sources) != set(params):
        raise RuntimeError(f"weight sources do not cover the parameters: {_format(set(params) ^ set(sources))}")
    wanted = {n for source in sources.values() for n in source.names}
    missing = wanted - set(weights)
    if missing:
        raise ValueError(f"checkpoint is missing weights: {_format(missing)}")
    unexpected = {n for n in weights if n not in wanted and not ignored(n)}
    if unexpected:
        raise ValueError(f"checkpoint has unexpected weights: {_format(unexpected)}")

    built = {}
    for param_name, source in sources.items():
        owner_name, _, leaf = param_name.rpartition(".")
        owner = module.get_submodule(owner_name)
        shard_of = getattr(owner, "shard_of", None)  # only parallel layers hold a slice
        shard = shard_of(leaf) if shard_of is not None else None
        if (source, shard) not in built:
            local = tuple(params[param_name].shape)
            expected = local if shard is None else (*local[: shard.dim], shard.full, *local[shard.dim + 1:])
            full = source.shape(weights)
            if full != expected:
                shapes = [tuple(weights[n].shape) for n in source.names]
                raise ValueError(
                    f"weight {' + '.join(source.names)} has shape {full or shapes}, the config implies {expected}"
                )
            tensor = source.build(weights, shard)
            if shard is not None:
                tensor = _padded(tensor, shard.dim, local[shard.dim])
            built[source, shard] = nn.Parameter(tensor, requires_grad=False)
        setattr(owner, leaf, built[source, shard])


def canonical_names(weights: dict, prefix: str, top_level=("lm_head.",)) -> dict:
    """Prefix every name outside `top_level` with `prefix` ("model.", "transformer."), so
    checkpoints saved from the bare base model load like the full causal LM."""
    out = {}
    for name, tensor in weights.items():
        keep = name.startswith(prefix) or name.startswith(top_level)
        out[name if keep else prefix + name] = tensor
    return out
