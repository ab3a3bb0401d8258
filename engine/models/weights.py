"""How a model's parameters are found in a Hugging Face checkpoint: one WeightSource per
parameter (several fused tensors, or a transposed one), checked against its shape."""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class WeightSource:
    """Where one model parameter comes from in a HF checkpoint.

    `names` are concatenated along dim 0 (fused q/k/v or gate/up projections); `transpose`
    turns GPT-2's Conv1D [in, out] layout into the [out, in] layout F.linear expects.
    """

    names: tuple[str, ...]
    transpose: bool = False

    def build(self, weights):
        parts = [weights[n].t() if self.transpose else weights[n] for n in self.names]
        return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)).contiguous()


def _format(names):
    names = sorted(names)
    shown = ", ".join(names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def load_hf_weights(module: nn.Module, weights: dict, sources: dict, ignored=lambda n: False):
    """Make each parameter of `module` the checkpoint tensor(s) `sources[param]` names.

    weights: HF name -> tensor (already in the target dtype and device). Raises ValueError
    naming missing or unexpected checkpoint tensors, or a shape that does not fit; names
    for which `ignored(name)` is true (non-weight buffers some checkpoints carry) are skipped.
    Parameters named by the same source list share one tensor (tied embeddings).
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
        if source not in built:
            tensor = source.build(weights)
            expected = tuple(params[param_name].shape)
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"weight {' + '.join(source.names)} has shape {tuple(tensor.shape)}, "
                    f"the config implies {expected}"
                )
            built[source] = nn.Parameter(tensor, requires_grad=False)
        owner_name, _, leaf = param_name.rpartition(".")
        setattr(module.get_submodule(owner_name), leaf, built[source])


def canonical_names(weights: dict, prefix: str, top_level=("lm_head.",)) -> dict:
    """Prefix every name outside `top_level` with `prefix` ("model.", "transformer."), so
    checkpoints saved from the bare base model load like the full causal LM."""
    out = {}
    for name, tensor in weights.items():
        keep = name.startswith(prefix) or name.startswith(top_level)
        out[name if keep else prefix + name] = tensor
    return out
