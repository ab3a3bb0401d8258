"""Load a local Hugging Face checkpoint folder into one of the engine's model classes.

The folder holds config.json, the weights (model.safetensors, a sharded
model.safetensors.index.json, or, only when pickle is allowed, pytorch_model.bin) and
usually the tokenizer files. The model is built on the meta device, so no memory is spent on
a random initialisation, and its parameters become the checkpoint's tensors, cast once to
the requested dtype and device. Safetensors are read lazily, tensor by tensor: a
tensor-parallel rank (`tp`) reads only the slices its layers hold, never the whole model.

Everything is checked before the model serves a request, and every refusal is a ValueError
whose message names the file and what is wrong with it: config.json (valid JSON, an
`architectures` entry this engine implements, a `model_type` that agrees with it), the
shard index (valid JSON, a weight_map of tensor name -> shard file inside the folder, each
shard present and holding the tensors listed for it), each weight file (a readable
safetensors file, or a weights-only pickle of tensors), the tokenizer, and the special ids
(a masked LM's template tokens must be inside the model's vocabulary). An end-of-sequence
id outside the vocabulary, from generation_config.json, config.json or the tokenizer, is
dropped with a warning naming its source, as it could never be generated. Custom code from
the checkpoint is never run.
"""
import importlib
import json
import os
import warnings
from dataclasses import dataclass

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PretrainedConfig
from transformers import PreTrainedTokenizerBase

from engine.backend import get_ops
from engine.config import DTYPES
from engine.distributed.parallel import SINGLE, ShardingError, TensorParallel
from engine.models import MODEL_REGISTRY, MODEL_TYPES
from engine.validation import check_int, check_int_list

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
)
CONFIG = "config.json"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Library messages that would advise turning a safety off are not passed on.
UNSAFE_ADVICE = ("trust_remote_code", "weights_only")
MASKED_TEMPLATE_TOKENS = ("mask", "cls", "sep", "bos", "eos")


@dataclass
class LoadedModel:
    model: torch.nn.Module  # in eval mode, on device, in dtype
    hf_config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase | None  # None when the folder has no tokenizer files
    kind: str  # "causal" | "masked"
    architecture: str
    vocab_size: int  # rows of the embedding (checked against the weights)
    max_positions: int
    eos_token_ids: list[int]  # each inside the vocabulary


@dataclass
class WeightFiles:
    files: list[str]
    is_pickle: bool
    index: str | None = None  # the shard index file, when the weights are sharded
    weight_map: dict[str, str] | None = None  # from the index: tensor name -> shard path


def _reason(error: Exception) -> str:
    """A library error in one line, for our own message; advice to lower safety is dropped."""
    text = " ".join(str(error).split())
    if not text or any(word in text for word in UNSAFE_ADVICE):
        return type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"


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
    if not os.path.isfile(os.path.join(path, CONFIG)):
        raise ValueError(f"{path!r} has no config.json: not a Hugging Face checkpoint")


def _read_json(file):
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    except OSError as e:
        raise ValueError(f"{file}: cannot be read ({e.strerror or e})") from None


def read_architecture(path) -> tuple[str, str]:
    """(architecture, kind) from the folder's config.json, checked against its model_type."""
    path = os.fspath(path)
    _check_folder(path)
    file = os.path.join(path, CONFIG)
    raw = _read_json(file)
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: must hold a JSON object, got {type(raw).__name__}")
    names = raw.get("architectures") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{file}: architectures must be a list of class names, got {names!r}")
    supported = [n for n in names if n in MODEL_REGISTRY]
    if not supported:
        raise ValueError(
            f"{file}: unsupported architecture {names or '(none listed)'}; supported: {sorted(MODEL_REGISTRY)}"
        )
    architecture = supported[0]
    module, _, kind = MODEL_REGISTRY[architecture]
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or MODEL_TYPES.get(model_type) != module:
        agreeing = sorted(t for t, m in MODEL_TYPES.items() if m == module)
        raise ValueError(
            f"{file}: architectures names {architecture} but model_type is {model_type!r}, which "
            f"contradicts it; {architecture} needs model_type in {agreeing}"
        )
    return architecture, kind


def read_config(path) -> PretrainedConfig:
    """The HF config of a folder whose config.json passed read_architecture; no custom code."""
    file = os.path.join(path, CONFIG)
    try:
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # the library's many ways to reject a config
        raise ValueError(f"{file}: not a valid config ({_reason(e)})") from None
    try:
        check_int("vocab_size", getattr(hf_config, "vocab_size", None), low=1)
        check_int("max_position_embeddings", max_positions(hf_config), low=1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{file}: {e}") from None
    return hf_config


def _model_class(architecture):
    module_name, class_name, _ = MODEL_REGISTRY[architecture]
    return getattr(importlib.import_module(f"engine.models.{module_name}"), class_name)


def max_positions(hf_config) -> int:
    """Longest context served, unless the model class says otherwise (a `max_positions`
    attribute, e.g. RoBERTa's position offset). A sliding window (Mistral) caps it:
    attention beyond the window is not implemented, so longer contexts are refused instead
    of served wrongly."""
    limit = getattr(hf_config, "max_position_embeddings", None)
    if limit is None:
        limit = getattr(hf_config, "n_positions", None)
    window = getattr(hf_config, "sliding_window", None)
    return min(limit, window) if window and limit else limit


def _inside(name) -> bool:
    """Whether an index's shard name stays inside the folder: relative, without a leading ..
    (checked by name, so a hub cache whose shards are symlinks to its blob store loads)."""
    normal = os.path.normpath(name)
    return not os.path.isabs(normal) and normal != os.pardir and not normal.startswith(os.pardir + os.sep)


def _read_index(path, index_name) -> WeightFiles:
    index = os.path.join(path, index_name)
    raw = _read_json(index)
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(
            f"{index}: must hold a non-empty \"weight_map\" object of tensor name -> shard file, "
            f"got {type(weight_map).__name__}"
        )
    shards = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or not _inside(shard):
            raise ValueError(f"{index}: the shard of {name!r} must be a file name inside the folder, got {shard!r}")
        file = os.path.join(path, shard)
        if not os.path.isfile(file):
            raise ValueError(f"{index}: lists shard {shard!r} (for {name!r}), which is missing")
        shards[name] = file
    return WeightFiles(sorted(set(shards.values())), index_name == PICKLE_INDEX, index, shards)


def weight_files(path, allow_pickle=False) -> WeightFiles:
    """The checkpoint's weight files; safetensors preferred, pickles only when allowed."""
    if os.path.isfile(os.path.join(path, SAFETENSORS)):
        return WeightFiles([os.path.join(path, SAFETENSORS)], False)
    if os.path.isfile(os.path.join(path, SAFETENSORS_INDEX)):
        return _read_index(path, SAFETENSORS_INDEX)
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
        return WeightFiles([os.path.join(path, PICKLE)], True)
    return _read_index(path, PICKLE_INDEX)


class StoredTensor:
    """One tensor of an open safetensors file, read when indexed: `shape`, and `[index]` ->
    that slice only, floating point cast to `dtype`, on `device`."""

    def __init__(self, file, name, dtype, device):
        self._slice = file.get_slice(name)
        self.shape = tuple(self._slice.get_shape())
        self.dtype, self.device = dtype, device

    def __getitem__(self, index) -> torch.Tensor:
        tensor = self._slice[index]
        return tensor.to(device=self.device, dtype=self.dtype if tensor.is_floating_point() else tensor.dtype)


def _read_file(file, is_pickle, dtype, device) -> dict:
    """Name -> tensor (pickle: read whole, cast) or StoredTensor (safetensors: read on demand)."""
    try:
        if is_pickle:
            tensors = torch.load(file, weights_only=True, map_location="cpu")
        else:
            handle = safe_open(file, framework="pt", device="cpu")  # checks the header and the size
            return {name: StoredTensor(handle, name, dtype, device) for name in handle.keys()}
    except Exception as e:  # truncated, corrupt, or (pickle) holding more than tensors
        what = "weights-only PyTorch checkpoint" if is_pickle else "safetensors file"
        raise ValueError(f"{file}: not a readable {what}; it may be truncated or corrupt ({_reason(e)})") from None
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise ValueError(f"{file}: must hold a flat mapping of tensor names to tensors")
    return {name: t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype) for name, t in tensors.items()}


def read_weights(source: WeightFiles, dtype, device) -> dict:
    """Every tensor by name, as read on demand in the given dtype (floating ones) and device."""
    weights, origin = {}, {}
    for file in source.files:
        tensors = _read_file(file, source.is_pickle, dtype, device)
        if source.weight_map is not None:
            absent = sorted(n for n, f in source.weight_map.items() if f == file and n not in tensors)
            if absent:
                raise ValueError(
                    f"{source.index}: lists {absent[:3]} in {os.path.basename(file)}, which does not hold them"
                )
        for name, tensor in tensors.items():
            if name in origin:
                raise ValueError(f"{file}: tensor {name!r} is also in {origin[name]}")
            origin[name] = file
            weights[name] = tensor
    return weights


def _ids(value, source) -> list[int]:
    values = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
    try:
        return check_int_list("eos_token_id", values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def eos_token_ids(path, hf_config, tokenizer, vocab_size) -> list[int]:
    """End-of-sequence ids from generation_config.json, config.json and the tokenizer; an id
    outside [0, vocab_size) is dropped with a warning naming where it came from."""
    sources = []
    generation = os.path.join(path, "generation_config.json")
    if os.path.isfile(generation):
        try:
            sources.append((generation, GenerationConfig.from_pretrained(path).eos_token_id))
        except Exception as e:
            raise ValueError(f"{generation}: not a valid generation config ({_reason(e)})") from None
    sources.append((os.path.join(path, CONFIG), getattr(hf_config, "eos_token_id", None)))
    if tokenizer is not None:
        sources.append((f"the tokenizer in {path}", tokenizer.eos_token_id))
    ids, dropped = [], False
    for source, value in sources:
        for t in _ids(value, source):
            if 0 <= t < vocab_size:
                ids.append(t)
            else:
                dropped = True
                warnings.warn(f"{source}: eos token id {t} is outside the model's vocabulary [0, {vocab_size}); "
                              "ignored", stacklevel=3)
    if dropped and not ids:
        warnings.warn(f"{path}: no end-of-sequence id is left; generation stops only at max_tokens or a stop "
                      "condition", stacklevel=3)
    return list(dict.fromkeys(ids))


def load_tokenizer(path):
    """The folder's tokenizer, or None when it has no tokenizer files."""
    present = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(path, name))]
    if not present:
        return None
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # the library's many ways to reject tokenizer files
        raise ValueError(f"{path}: the tokenizer ({', '.join(present)}) cannot be loaded ({_reason(e)})") from None


def _check_masked_template(tokenizer, vocab_size, path):
    """Mask-predict builds every sequence from these special tokens: each must be embeddable."""
    for name in MASKED_TEMPLATE_TOKENS:
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None and not 0 <= token_id < vocab_size:
            raise ValueError(
                f"{path}: the tokenizer's {name} token id {token_id} is outside the model's vocabulary "
                f"[0, {vocab_size}); tokenizer and model do not match"
            )


def build_model(architecture, hf_config, ops, tp: TensorParallel = SINGLE):
    """The model class of `architecture` built from `hf_config` on the meta device (no
    weights); a config it cannot be built from (a missing field, a tensor-parallel size that
    does not divide its heads) is a ValueError."""
    try:
        with torch.device("meta"):
            return _model_class(architecture)(hf_config, ops, tp)
    except ShardingError as e:
        raise ValueError(f"{architecture}: {e}") from None
    except Exception as e:  # a field the class needs is missing or out of range
        raise ValueError(f"cannot build {architecture} from it ({_reason(e)})") from e


def load_model(path, dtype="auto", device="cpu", kernel_backend="torch", allow_pickle=False, tp=SINGLE):
    """Build the engine model for the checkpoint folder `path` -> LoadedModel; with `tp`,
    this rank's shard of it."""
    path = os.fspath(path)
    ops = get_ops(kernel_backend)
    architecture, kind = read_architecture(path)
    hf_config = read_config(path)
    torch_dtype = resolve_dtype(dtype, device, hf_config)
    source = weight_files(path, allow_pickle)
    tokenizer = load_tokenizer(path)
    vocab_size = hf_config.vocab_size
    if kind == "masked" and tokenizer is not None:
        _check_masked_template(tokenizer, vocab_size, path)
    eos_ids = eos_token_ids(path, hf_config, tokenizer, vocab_size)

    try:
        model = build_model(architecture, hf_config, ops, tp)
    except ValueError as e:
        raise ValueError(f"{os.path.join(path, CONFIG)}: {e}") from e.__cause__
    weights = read_weights(source, torch_dtype, device)
    try:
        model.load_weights(weights)
    except Exception as e:  # missing, unexpected or misshapen tensors
        problem = str(e) if isinstance(e, ValueError) else _reason(e)
        raise ValueError(f"{source.index or source.files[0]}: {problem}") from e
    model.eval()

    return LoadedModel(
        model=model,
        hf_config=hf_config,
        tokenizer=tokenizer,
        kind=kind,
        architecture=architecture,
        vocab_size=vocab_size,
        max_positions=getattr(model, "max_positions", None) or max_positions(hf_config),
        eos_token_ids=eos_ids,
    )
