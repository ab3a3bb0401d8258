"""Tiny random checkpoints of the experiment's models (benchmarks/objectives.py), saved as the
sweep saves its points: HF folder, the family's tokenizer, train_log.json."""
import torch

from benchmarks.objectives import MODELS
from benchmarks.tokenizer import build_tokenizer
from benchmarks.train import save_model
from benchmarks.transformer import SIZES, Transformer


def make_experiment_model(name, path, lang, seed=0, scale=0.3):
    """Random weights with a large init range (peaked predictions), exact in fp16."""
    torch.manual_seed(seed)
    model = Transformer(SIZES["tiny"], len(build_tokenizer("plain", lang.words)), MODELS[name].causal).eval()
    for p in model.parameters():
        p.data = p.data.normal_(0, scale).half().float()
    save_model(model, {"config": {"model": name}}, path, lang)
    return model, str(path)
