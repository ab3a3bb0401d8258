"""Load a local Hugging Face checkpoint folder into one of the engine's model classes.

The folder holds config.json, the weights (model.safetensors, a sharded
model.safetensors.index.json, or, only when pickle is allowed, pytorch_model.bin) and
usually the tokenizer files. The model is built on the meta device, so no memory is spent on
a random initialisation, and its parameters become the checkpoint's tensors, cast once to
the requested dtype and device.
"""
import importlib
import json
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PretrainedConfig
from transformers import PreTrainedTokenizerBase

from engine.backend import get_ops
from engine.models import MODEL_REGISTRY

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
)
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


@dataclass
class LoadedModel:
    model: torch.nn.Module  # in eval mode, on device, in dtype
    hf_config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase | None  # None when the folder has no tokenizer files
    kind: str  # "causal" | "masked"
    architecture: str
    vocab_size: int
    max_positions: int
    eos_token_ids: list[int]


def resolve_dtype(dtype, device, hf_config=None) -> torch.dtype:
    """"auto" is float32 on CPU and the checkpoint's dtype (else bfloat16) on an accelerator."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {list(DTYPES)} or 'auto', got {dtype}")
        return dtype
    if dtype == "auto":
        if torch.device(device).type == "cpu":
            return torch.float32
        saved = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
        if isinstance(saved, str):
            saved = DTYPES.get(saved)
        return saved if saved in DTYPES.values() else torch.bfloat16
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)} or 'auto', got {dtype!r}")
    return DTYPES[dtype]


def _check_folder(path):
    if not os.path.exists(path):
        raise ValueError(f"model path {path!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"model path {path!r} is not a directory (expected a checkpoint folder)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path!r} has no config.json: not a Hugging Face checkpoint")


def _shards(path, index_name):
    with open(os.path.join(path, index_name), encoding="utf-8") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    return [os.path.join(path, name) for name in files]


def weight_files(path, allow_pickle=False) -> tuple[list[str], bool]:
    """The checkpoint's weight files and whether they are pickles; safetensors preferred."""
    if os.path.isfile(os.path.join(path, SAFETENSORS)):
        return [os.path.join(path, SAFETENSORS)], False
    if os.path.isfile(os.path.join(path, SAFETENSORS_INDEX)):
        return _shards(path, SAFETENSORS_INDEX), False
    has_pickle = os.path.isfile(os.path.join(path, PICKLE))
    has_pickle_index = os.path.isfile(os.path.join(path, PICKLE_INDEX))
    if not (has_pickle or has_pickle_index):
        raise ValueError(
            f"{path!r} has no weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLE}"
        )
    if not allow_pickle:
        raise ValueError(
            f"{path!r} only has pickled weights ({PICKLE}), which can run code when loaded; "
            "pass allow_pickle=True to load them anyway, or convert them to safetensors"
        )
    if has_pickle:
        return [os.path.join(path, PICKLE)], True
    return _shards(path, PICKLE_INDEX), True


def read_weights(files, is_pickle, dtype, device) -> dict[str, torch.Tensor]:
    """All tensors by name; floating ones cast to dtype, everything moved to device."""
    weights = {}
    for file in files:
        if is_pickle:
            shard = torch.load(file, weights_only=True, map_location="cpu")
        else:
            shard = load_file(file, device=str(torch.device(device)))
        for name, tensor in shard.items():
            cast = dtype if tensor.is_floating_point() else tensor.dtype
            weights[name] = tensor.to(device=device, dtype=cast)
    return weights


def _model_class(architecture):
    module_name, class_name, kind = MODEL_REGISTRY[architecture]
    module = importlib.import_module(f"engine.models.{module_name}")
    return getattr(module, class_name), kind


def _architecture(hf_config, path):
    names = getattr(hf_config, "architectures", None) or []
    for name in names:
        if name in MODEL_REGISTRY:
            return name
    raise ValueError(
        f"unsupported architecture {names or '(none in config.json)'} in {path!r}; "
        f"supported: {sorted(MODEL_REGISTRY)}"
    )


def max_positions(hf_config) -> int:
    """Longest context served, unless the model class says otherwise (a `max_positions`
    attribute, e.g. RoBERTa's position offset). A sliding window (Mistral) caps it:
    attention beyond the window is not implemented, so longer contexts are refused instead
    of served wrongly."""
    limit = getattr(hf_config, "max_position_embeddings", None)
    if limit is None:
        limit = hf_config.n_positions
    window = getattr(hf_config, "sliding_window", None)
    return min(limit, window) if window else limit


def _as_list(ids):
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


def eos_token_ids(path, hf_config, tokenizer) -> list[int]:
    """End-of-sequence ids from generation_config.json, config.json and the tokenizer."""
    ids = []
    if os.path.isfile(os.path.join(path, "generation_config.json")):
        ids += _as_list(GenerationConfig.from_pretrained(path).eos_token_id)
    ids += _as_list(getattr(hf_config, "eos_token_id", None))
    if tokenizer is not None:
        ids += _as_list(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def load_tokenizer(path):
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        return None
    return AutoTokenizer.from_pretrained(path)


def load_model(path, dtype="auto", device="cpu", kernel_backend="torch", allow_pickle=False):
    """Build the engine model for the checkpoint folder `path` -> LoadedModel."""
    path = os.fspath(path)
    _check_folder(path)
    ops = get_ops(kernel_backend)
    hf_config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    architecture = _architecture(hf_config, path)
    cls, kind = _model_class(architecture)
    torch_dtype = resolve_dtype(dtype, device, hf_config)
    files, is_pickle = weight_files(path, allow_pickle)

    with torch.device("meta"):
        model = cls(hf_config, ops)
    model.load_weights(read_weights(files, is_pickle, torch_dtype, device))
    model.eval()

    tokenizer = load_tokenizer(path)
    return LoadedModel(
        model=model,
        hf_config=hf_config,
        tokenizer=tokenizer,
        kind=kind,
        architecture=architecture,
        vocab_size=hf_config.vocab_size,
        max_positions=getattr(model, "max_positions", None) or max_positions(hf_config),
        eos_token_ids=eos_token_ids(path, hf_config, tokenizer),
    )
