"""The shapes every kernel is tested, benchmarked, checked and compiled at, and their inputs.

One list per kernel family, read by tests/kernels (the `cpu` cases, small enough for Triton's
interpreter, and the `gpu` cases of the GPU-only tests), benchmarks/microbench and
benchmarks/gpu_checks (`gpu` on CUDA, `quick` on CPU). `MODELS` lists the attention, MLP and
vocabulary shapes of the supported families and of the models the test suite builds; the
compile report (benchmarks/compile_report.py) compiles every kernel configuration they reach.

Paged caches are built as the engine lays them out: [num_blocks, block_size, Hkv, D], int32
block tables whose rows may be wider than a sequence needs (the engine's CUDA graphs pass
rows as wide as the longest context served) and whose unused entries point at block 0.
Block 0 is a spare that no sequence owns; with `poison=True` it and every other row outside
a context hold NaN, so a kernel that reads past a context fails its comparison.
"""
import dataclasses

import torch

import kernels  # noqa: F401  (selects Triton's interpreter on CPU before triton loads)
import triton  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The shapes one decoder / encoder layer of a model family gives the kernels."""

    name: str
    family: str  # "llama" (RMSNorm, rotary, SwiGLU), "gpt2" (LayerNorm, GELU tanh), "bert" (encoder),
    # "eurobert" (the llama layer as an encoder: no cache, bidirectional)
    hidden: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


MODELS = [
    # The models the test suite builds (tests/tiny_causal.py, tests/tiny_masked.py) and the bundled ones.
    ModelShape("tiny llama/qwen2/mistral (tests)", "llama", 64, 4, 2, 16, 128, 128),
    ModelShape("tiny gpt2 (tests)", "gpt2", 64, 4, 4, 16, 256, 128),
    ModelShape("tiny bert (tests)", "bert", 32, 4, 4, 8, 64, 96),
    ModelShape("bundled ar-gpt2 (Llama format)", "llama", 96, 4, 4, 24, 256, 307),
    ModelShape("bundled ar-gpt2-draft", "llama", 32, 2, 2, 16, 96, 307),
    ModelShape("bundled cmlm/mlm-bert (EuroBERT format)", "eurobert", 96, 4, 4, 24, 256, 307),
    # Real checkpoints of the supported families.
    ModelShape("GPT-2 124M", "gpt2", 768, 12, 12, 64, 3072, 50257),
    ModelShape("BERT-base", "bert", 768, 12, 12, 64, 3072, 30522),
    ModelShape("Qwen2-0.5B", "llama", 896, 14, 2, 64, 4864, 151936),
    ModelShape("Qwen2-1.5B", "llama", 1536, 12, 2, 128, 8960, 151936),
    ModelShape("Llama-3.2-1B", "llama", 2048, 32, 8, 64, 8192, 128256),
    ModelShape("Llama-3-8B / Mistral-7B", "llama", 4096, 32, 8, 128, 14336, 128256),
]


@dataclasses.dataclass(frozen=True)
class DecodeCase:
    context_lens: tuple
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    max_model_len: int = 0  # block-table width in tokens; 0: just what the longest context needs

    def label(self):
        lens = self.context_lens
        ctx = f"ctx={lens[0]}x{len(lens)}" if len(set(lens)) == 1 else f"ctx={list(lens)}"
        width = f" table={self.max_model_len}" if self.max_model_len else ""
        return f"{ctx} Hq={self.num_q_heads} Hkv={self.num_kv_heads} D={self.head_dim} bs={self.block_size}{width}"


@dataclasses.dataclass(frozen=True)
class PrefillCase:
    lens: tuple
    num_q_heads: int
    num_kv_heads: int
    head_dim: int

    def label(self):
        lens = self.lens
        seqs = f"{len(lens)}x{lens[0]}" if len(set(lens)) == 1 else str(list(lens))
        return f"{seqs} Hq={self.num_q_heads} Hkv={self.num_kv_heads} D={self.head_dim}"


@dataclasses.dataclass(frozen=True)
class PagedPrefillCase:
    prefix_lens: tuple  # cached tokens per sequence
    new_lens: tuple  # tokens this step computes per sequence
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    block_size: int

    def label(self):
        return (f"prefix={list(self.prefix_lens)} new={list(self.new_lens)} Hq={self.num_q_heads} "
                f"Hkv={self.num_kv_heads} D={self.head_dim} bs={self.block_size}")


@dataclasses.dataclass(frozen=True)
class Cases:
    cpu: list  # the tests' cases, small enough for the interpreter
    quick: list  # microbench and gpu_check --quick on CPU
    gpu: list  # GPU-only tests, microbench and gpu_check on CUDA

    def for_device(self, device):
        return self.gpu if str(device).startswith("cuda") else self.quick


# Head dims 8 to 128 (the test models' and real ones, 80 and 96 as in some Llama variants), GQA
# ratios 1 to 8, contexts of one row, ragged batches, block sizes 16 and 32.
DECODE = Cases(
    cpu=[
        DecodeCase((1,), 2, 2, 64, 16),
        DecodeCase((1, 17, 50), 8, 2, 80, 16),
        DecodeCase((33, 5, 64), 8, 1, 96, 32),
        DecodeCase((130, 1), 4, 4, 64, 32),
        DecodeCase((9, 23), 4, 2, 16, 16, max_model_len=128),
        DecodeCase((12, 40), 4, 4, 24, 16),
        DecodeCase((700, 3), 4, 1, 64, 32),  # several partitions for the long row only
        DecodeCase((0, 20), 4, 2, 64, 16),  # an empty context yields zeros
    ],
    quick=[DecodeCase((40, 7), 4, 2, 32, 16, max_model_len=256), DecodeCase((600,), 4, 1, 32, 32)],
    gpu=[
        DecodeCase((4096,) * 64, 32, 32, 128, 16, max_model_len=32768),  # MHA
        DecodeCase((4096,) * 64, 32, 8, 128, 16, max_model_len=32768),  # GQA
        DecodeCase((32768,), 32, 8, 128, 16, max_model_len=32768),  # one long context: split-KV
        DecodeCase((4096, 1, 777, 2048), 32, 8, 128, 16, max_model_len=32768),
        DecodeCase((300,) * 64, 32, 32, 128, 16, max_model_len=4096),
    ],
)

PREFILL = Cases(
    cpu=[
        PrefillCase((1,), 2, 2, 64),
        PrefillCase((19,), 2, 2, 64),
        PrefillCase((70,), 2, 2, 64),
        PrefillCase((5, 40, 0, 1, 18), 2, 2, 64),  # an empty and a one-token sequence
        PrefillCase((5, 40, 0, 1, 18), 4, 1, 80),
        PrefillCase((5, 40, 0, 1, 18), 8, 1, 96),
        PrefillCase((5, 33, 1), 4, 4, 8),  # tiny bert's head_dim, below the 16 of a dot tile
        PrefillCase((9, 30), 4, 2, 16),
        PrefillCase((12, 20), 4, 4, 24),
    ],
    quick=[PrefillCase((5, 40, 1), 4, 2, 64)],
    gpu=[
        PrefillCase((1024,) * 8, 32, 32, 128),  # 8k tokens; encoders are MHA, AR models GQA
        PrefillCase((4096,) * 2, 32, 32, 128),
        PrefillCase((1024,) * 8, 32, 8, 128),
        PrefillCase((4096,) * 2, 32, 8, 128),
        PrefillCase((48,) * 128, 12, 12, 64),  # many short encoder passes
        PrefillCase((1, 300, 129, 1000, 64), 16, 4, 80),
    ],
)

PAGED_PREFILL = Cases(
    cpu=[
        # Prefixes: none, shorter than a block, exactly a block, not a multiple of the block.
        PagedPrefillCase((0, 5, 16, 40), (3, 1, 20, 37), 4, 2, 64, 16),
        PagedPrefillCase((0, 5, 16, 40), (3, 1, 20, 37), 4, 2, 64, 32),
        PagedPrefillCase((33, 0), (4, 21), 8, 1, 80, 16),
        PagedPrefillCase((7, 30), (5, 2), 4, 2, 16, 16),
    ],
    quick=[PagedPrefillCase((20, 20), (9, 9), 4, 2, 64, 16)],
    gpu=[
        PagedPrefillCase((2048,) * 4, (512,) * 4, 32, 8, 128, 16),
        PagedPrefillCase((0, 3000, 77), (2048, 512, 1), 32, 8, 128, 16),
        PagedPrefillCase((0, 77, 2048, 500), (300, 1, 512, 129), 32, 8, 128, 32),
    ],
)

# (tokens, kv heads, head_dim, block_size, skipped tokens)
STORE_KV = Cases(
    cpu=[(1, 1, 32, 16, 0), (7, 2, 80, 16, 3), (37, 4, 96, 32, 5), (5, 3, 64, 16, 5), (6, 2, 16, 16, 1)],
    quick=[(24, 2, 32, 16, 0)],
    gpu=[(16384, 8, 128, 16, 0), (64, 8, 128, 16, 0)],
)

# (tokens, q heads, kv heads, head_dim): a single token, GQA, odd head counts, D/2 not a power of two.
ROTARY = Cases(
    cpu=[(1, 4, 2, 64), (5, 3, 1, 80), (7, 8, 8, 96), (3, 6, 2, 128), (4, 4, 2, 16)],
    quick=[(4, 4, 2, 32)],
    gpu=[(16384, 32, 8, 128), (256, 32, 8, 128), (1, 12, 2, 128)],
)

# Norm inputs: leading shapes with a single row, non-power-of-two widths.
NORM = Cases(
    cpu=[(1, 64), (7, 80), (3, 5, 96), (5, 100), (2, 768), (37, 64)],
    quick=[(8, 80)],
    gpu=[(16384, 4096), (64, 4096)],
)

# (rows M, in features K, out features N) of rms_norm_linear: M = 1, 5, 33 (two 32-row tiles),
# K one partial K step and two (the last partial), N not a multiple of the column tile. On
# GPUs: a Qwen2-1.5B layer's qkv (N 2048) and gate/up (N 17920) projections at decode batches,
# and at a 1024-token prefill chunk (the GPU check forces the fused kernel there).
NORM_LINEAR = Cases(
    cpu=[(1, 64, 48), (5, 100, 72), (33, 200, 40)],
    quick=[(4, 96, 80), (300, 32, 24)],
    gpu=[(rows, 1536, n_out) for n_out in (2048, 2 * 8960) for rows in (1, 16, 64, 256, 1024)],
)

# Activation inputs [..., 2I] (silu_and_mul) and [..., N] (gelu): more than one block per row too.
ACTIVATION = Cases(
    cpu=[(1, 128), (7, 160), (3, 5, 200), (2, 4864)],
    quick=[(4, 96)],
    gpu=[(8192, 2 * 14336), (16384, 4096)],
)

# (batch, vocab)
SAMPLING = Cases(
    cpu=[(1, 1), (48, 37), (64, 1000), (8, 2500)],
    quick=[(4, 1000)],
    gpu=[(1, 151936), (16, 151936), (256, 151936), (256, 50257)],
)


# ---- inputs ----

def cu_seqlens(lens, device):
    """int32 [B+1] prefix sums of sequence lengths."""
    return torch.tensor([0, *lens], device=device).cumsum(0).to(torch.int32)


def packed_inputs(lens, num_q_heads, num_kv_heads, head_dim, dtype, device):
    """Random packed q [T, Hq, D], k/v [T, Hkv, D] and cu_seqlens for sequences of `lens`."""
    total = sum(lens)
    q = torch.randn(total, num_q_heads, head_dim, dtype=dtype, device=device)
    k = torch.randn(total, num_kv_heads, head_dim, dtype=dtype, device=device)
    v = torch.randn(total, num_kv_heads, head_dim, dtype=dtype, device=device)
    return q, k, v, cu_seqlens(lens, device)


def paged_cache(context_lens, num_kv_heads, head_dim, block_size, dtype, device, table_width=0, poison=False):
    """(k_cache, v_cache, block_tables, context_lens) holding context_lens[b] random rows for
    sequence b in scattered blocks (module docstring: block 0 is the spare, tables padded with 0).
    """
    blocks_per_seq = [triton.cdiv(n, block_size) for n in context_lens]
    width = max(table_width, max(blocks_per_seq, default=0), 1)
    num_blocks = 1 + sum(blocks_per_seq)
    owners = 1 + torch.randperm(num_blocks - 1)
    block_tables = torch.zeros(len(context_lens), width, dtype=torch.int32)
    slots = []
    for b, (n, used) in enumerate(zip(context_lens, blocks_per_seq)):
        block_tables[b, :used], owners = owners[:used], owners[used:]
        rows = torch.arange(n)
        slots.append(block_tables[b, rows // block_size].long() * block_size + rows % block_size)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    caches = []
    for _ in range(2):
        cache = torch.randn(shape, dtype=dtype, device=device)
        if poison:
            used = torch.zeros(num_blocks * block_size, dtype=torch.bool)
            used[torch.cat(slots)] = True
            cache.view(-1, num_kv_heads, head_dim)[~used.to(device)] = float("nan")
        caches.append(cache)
    lens = torch.tensor(context_lens, dtype=torch.int32, device=device)
    return caches[0], caches[1], block_tables.to(device), lens


def decode_inputs(case: DecodeCase, dtype, device, poison=False):
    """q [B, Hq, D] and its paged cache: the arguments of decode_attention but the scale."""
    width = triton.cdiv(case.max_model_len, case.block_size)
    k_cache, v_cache, block_tables, lens = paged_cache(
        case.context_lens, case.num_kv_heads, case.head_dim, case.block_size, dtype, device, width, poison)
    q = torch.randn(len(case.context_lens), case.num_q_heads, case.head_dim, dtype=dtype, device=device)
    return q, k_cache, v_cache, block_tables, lens


def paged_prefill_inputs(case: PagedPrefillCase, dtype, device, poison=False):
    """The new tokens' queries and a cache holding prefix + new rows per sequence, with one
    spare table column: the arguments of paged_prefill_attention but the scale."""
    context = [p + n for p, n in zip(case.prefix_lens, case.new_lens)]
    width = max(triton.cdiv(c, case.block_size) for c in context) + 1
    k_cache, v_cache, block_tables, lens = paged_cache(
        context, case.num_kv_heads, case.head_dim, case.block_size, dtype, device, width, poison)
    q = torch.randn(sum(case.new_lens), case.num_q_heads, case.head_dim, dtype=dtype, device=device)
    return q, k_cache, v_cache, block_tables, cu_seqlens(case.new_lens, device), lens
