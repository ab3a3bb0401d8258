"""An offline word-level HF tokenizer for tiny test checkpoints (no hub access here)."""
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import PreTrainedTokenizerFast

WORDS = (
    "the a an one two cat dog bird fish man woman child tree house car road river city "
    "runs sees eats likes finds walks sleeps sings reads writes big small red green old new "
    "happy sad fast slow and or but with near under over in on at to from of is was "
    "quickly slowly very not . , ! ? \" ( )"
).split()

# special tokens per architecture family: (name in the tokenizer -> token text)
CAUSAL_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
BERT_SPECIALS = {
    "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
    "pad_token": "[PAD]", "unk_token": "[UNK]",
}
ROBERTA_SPECIALS = {
    "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
    "mask_token": "<mask>", "pad_token": "<pad>", "unk_token": "<unk>",
}


def make_tokenizer(specials, vocab_size=None):
    """Specials first (ids 0..), then WORDS, then filler words up to vocab_size."""
    names = list(dict.fromkeys(specials.values()))
    words = names + WORDS
    if vocab_size is not None:
        words += [f"w{i}" for i in range(vocab_size - len(words))]
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, **specials)
