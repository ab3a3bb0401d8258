"""The bundled word-level tokenizer: one vocabulary for both model families.

Ids: the special tokens first (below), then every word of the reference language, then the
length tokens of the answer frame (benchmarks/frame.py: what a masked model's length slot
predicts; ordinary entries, not special tokens). A text is
words joined by single spaces, so encode/decode round-trips exactly (no cleanup of spaces
before punctuation). The same vocabulary is saved with a family-specific template:
"causal" prepends `<bos>` (the GPT-2 model was trained on `<bos> sentence <eos>`), "bert"
wraps in `[CLS] ... [SEP]`. `<eos>` is the end-of-sequence token of both: the causal LM ends
sentences with it and the CMLM pads its answer slots with it.
"""
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from benchmarks.frame import LENGTH_TOKENS
from benchmarks.language import ReferenceLanguage

SPECIALS = {
    "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
    "mask_token": "[MASK]", "bos_token": "<bos>", "eos_token": "<eos>",
}
TEMPLATES = ("plain", "causal", "bert")


def build_tokenizer(template="plain", words=None, model_max_length=64):
    """A PreTrainedTokenizerFast over SPECIALS + `words` (default: the reference language's)
    + LENGTH_TOKENS."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    words = ReferenceLanguage().words if words is None else list(words)
    vocab = {tok: i for i, tok in enumerate(list(SPECIALS.values()) + words + list(LENGTH_TOKENS))}
    if len(vocab) != len(SPECIALS) + len(words) + len(LENGTH_TOKENS):
        raise ValueError("words must be distinct and must not repeat a special token")
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIALS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # join with single spaces
    ids = lambda *toks: [(t, vocab[t]) for t in toks]
    if template == "causal":
        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=ids("<bos>"))
    elif template == "bert":
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=ids("[CLS]", "[SEP]"))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, clean_up_tokenization_spaces=False, model_max_length=model_max_length, **SPECIALS)
