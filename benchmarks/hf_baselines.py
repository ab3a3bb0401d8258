"""The HF transformers baselines, measured in the same run as the engine.

- AR: `model.generate()` on a batch of equal-length prompts (no padding), greedy, stopping at
  the end-of-sequence token like the engine (the batch runs until its longest row ends).
- Mask-predict: a plain batched loop over the HF `*ForMaskedLM` with the engine's default
  semantics (argmax over non-special tokens but the eos token, re-mask the lowest confidences
  linearly); `hf_framed_mask_predict` adds the experiment models' length head (a one-slot
  pass) and runs each frame size as its own batch.
All run under torch.no_grad(), the mode HF's generate() applies itself. The engine's steps run
under torch.inference_mode(), which also skips autograd's version counters; the ratios include
that difference. Wrapped in inference_mode, HF's generate() of the bundled ar-gpt2 takes 9-17% less
time at batch 4 and 16 and 2% less at batch 64 (2-core CPU, 2026-12-01).
"""
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM


def load_hf(path, kind, device, dtype):
    cls = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
    return cls.from_pretrained(path, dtype=dtype).to(device).eval()


@torch.no_grad()
def hf_generate(model, prompt_ids, max_new_tokens, eos_token_id):
    """Greedy `generate()` over equal-length prompts until every row has produced eos (or
    max_new_tokens); returns each row's new tokens up to and including its first eos."""
    ids = torch.tensor(prompt_ids, device=model.device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                         eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    rows = out[:, ids.shape[1]:].tolist()
    return [row[:row.index(eos_token_id) + 1] if eos_token_id in row else row for row in rows]


@torch.no_grad()
def hf_generate_fixed(model, prompt_ids, new_tokens):
    """Greedy `generate()` of exactly new_tokens per row (min = max new tokens) -> [B, new_tokens]."""
    ids = torch.tensor(prompt_ids, device=model.device)
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.generation_config.eos_token_id
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=pad if not isinstance(pad, list) else pad[0])
    return out[:, ids.shape[1]:]


def maskable_vocab(tokenizer, vocab_size, device):
    """Bool [V]: tokens mask-predict may produce (no specials except the eos token)."""
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=device)
    special = set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}
    allowed[[i for i in special if i < vocab_size]] = False
    return allowed


@torch.no_grad()
def hf_mask_predict(model, tokenizer, prompt_ids, length, iterations):
    """Mask-Predict over equal-length prompts with the HF model; returns the slots [B, N]."""
    device = model.device
    batch = len(prompt_ids)
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    mask_id = tokenizer.mask_token_id
    prompt = torch.tensor(prompt_ids, device=device)
    slots = torch.full((batch, length), mask_id, device=device)
    frame = lambda s: torch.cat([  # noqa: E731
        torch.full((batch, 1), cls_id, device=device), prompt, s, torch.full((batch, 1), sep_id, device=device)
    ], dim=1)
    start = 1 + prompt.shape[1]
    allowed = maskable_vocab(tokenizer, model.config.vocab_size, device)
    confidence = torch.zeros(batch, length, device=device)
    for t in range(iterations):
        logits = model(frame(slots)).logits[:, start : start + length].float()
        probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        conf, pred = probs.max(dim=-1)
        masked = slots == mask_id
        slots = torch.where(masked, pred, slots)
        confidence = torch.where(masked, conf, confidence)
        n = length * (iterations - 1 - t) // iterations
        if n:
            # lowest confidence first, lower position first among equals
            remask = torch.argsort(confidence, dim=-1, stable=True)[:, :n]
            slots = slots.scatter(1, remask, mask_id)
    return slots


def hf_framed_mask_predict(model, tokenizer, prompt_ids, passes, frames=None, length_head=None):
    """Mask-predict with per-row frames: asked from the length head (`length_head(token) ->
    frame`, one one-slot pass) when `frames` is None; each frame size runs as one batch.
    passes: T, or "N" for the frame's size. Returns each row's slots."""
    if frames is None:
        heads = hf_mask_predict(model, tokenizer, prompt_ids, 1, 1)[:, 0].tolist()
        frames = [length_head(tokenizer.convert_ids_to_tokens(t)) for t in heads]
    out = [None] * len(prompt_ids)
    for frame in sorted(set(frames)):
        rows = [i for i, f in enumerate(frames) if f == frame]
        slots = hf_mask_predict(model, tokenizer, [prompt_ids[i] for i in rows], frame,
                                frame if passes == "N" else min(passes, frame))
        for i, row in zip(rows, slots.tolist()):
            out[i] = row
    return out
