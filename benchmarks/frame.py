"""The answer frame's geometry, shared by the tokenizer, the objectives and the decoders.

A framed model reads `[CLS] prompt answer [SEP]`, the answer padded with `<eos>` to a multiple
of SLOT_STEP slots (at least one `<eos>`), at most MAX_SLOTS. Its length head is the same
model reading `[CLS] prompt [MASK] [SEP]` (a one-slot frame, which no answer uses) and
predicting the answer's frame size as one of the LENGTH_TOKENS, "<len4>" ... "<len32>": ordinary
vocabulary entries, so the engine's mask-predict can produce them (Mask-Predict's length
prediction, with a slot of the model itself as the classifier).
"""
SLOT_STEP = 4
MAX_SLOTS = 32
ANSWER_SLOTS = tuple(range(SLOT_STEP, MAX_SLOTS + 1, SLOT_STEP))
MAX_ANSWER_WORDS = MAX_SLOTS - 1
LENGTH_TOKENS = tuple(f"<len{n}>" for n in ANSWER_SLOTS)


def answer_slots(words):
    """Slots of the frame for an answer of `words` words (plus at least one <eos>)."""
    if not 0 <= words <= MAX_ANSWER_WORDS:
        raise ValueError(f"an answer of {words} words does not fit the largest frame ({MAX_ANSWER_WORDS} words)")
    return -(-(words + 1) // SLOT_STEP) * SLOT_STEP


def length_token(slots):
    return LENGTH_TOKENS[ANSWER_SLOTS.index(slots)]


def frame_of_length_token(token):
    """The frame size a length token names, None for any other token."""
    return ANSWER_SLOTS[LENGTH_TOKENS.index(token)] if token in LENGTH_TOKENS else None
