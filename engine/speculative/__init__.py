"""Speculative decoding: a draft model proposes k tokens, the causal target verifies them in
one forward and keeps the longest prefix it agrees with (greedy) or accepts by rejection
sampling (sampled), so the output is exactly the target's.

    config.py          SpeculativeConfig (the `speculative_config` engine option)
    draft_check.py     check_draft: can the draft checkpoint draft for the target (files only)
    executor.py        SpeculativeExecutor: one propose / verify / commit step
    proposer.py        k per step: fixed, or adaptive from measured acceptance and cost
    masked_drafter.py  a bidirectional masked LM fills k slots in parallel passes
    causal_drafter.py  a smaller causal LM drafts k tokens over its own paged KV cache
    proposal.py        the drafts and their distributions handed to the verifier
    verifier.py        greedy prefix matching and rejection sampling over the target's rows
    rejection.py       the sampling math: distributions, seeded draws, the rejection rule
    metrics.py         drafted / accepted counters per request and per engine

docs/speculative.md explains the design and the measurements.
"""
