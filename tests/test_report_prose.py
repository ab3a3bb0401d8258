"""The report's sentences follow from its numbers: built from numbers that contradict a claim,
it prints the other claim (or none), never the contradicted one."""
from benchmarks import report


def _p(value, half=0.03, n=1000):
    return {"value": value, "lo": max(0.0, value - half), "hi": min(1.0, value + half), "n": n}


def _row(model, config, kind, validity, temperature=0.0, passes="1", mean_passes=2.0):
    return {"model": model, "config": config, "kind": kind, "temperature": temperature, "seeds": 1,
            "validity": _p(validity), "validity_per_seed": [validity], "mean_words": 8.0,
            "mean_passes": mean_passes, "passes_setting": passes, "length_tv": 0.1}


def _quality(ar_sampled, t1, tn):
    return {"pooled": [_row("ar", "AR sampled, temp 1", "ar", ar_sampled, temperature=1.0),
                       _row("cmlm", "T=1", "mp", t1, passes="1", mean_passes=2),
                       _row("cmlm", "T=N", "mp", tn, passes="N", mean_passes=12)],
            "reference": None}


def test_the_more_valid_mode_is_the_one_named_more_valid():
    ar_wins = " ".join(report.quality_sentences(_quality(0.95, 0.2, 0.4)))
    mp_wins = " ".join(report.quality_sentences(_quality(0.30, 0.2, 0.9)))
    tie = " ".join(report.quality_sentences(_quality(0.50, 0.2, 0.51)))
    assert "ar sampled at temperature 1 (95.0%" in ar_wins and "is more valid than cmlm" in ar_wins
    assert "cmlm T=N (90.0%" in mp_wins and "is more valid than ar sampled" in mp_wins
    assert "more valid than ar" not in ar_wins and "more valid than cmlm" not in mp_wins
    assert "indistinguishable" in tie and "is more valid than" not in tie


def test_the_direction_of_validity_with_passes_follows_the_numbers():
    assert "validity rises from T=1" in " ".join(report.quality_sentences(_quality(0.9, 0.2, 0.6)))
    falls = " ".join(report.quality_sentences(_quality(0.9, 0.6, 0.2)))
    assert "validity falls from T=1" in falls and "rises" not in falls
    flat = " ".join(report.quality_sentences(_quality(0.9, 0.40, 0.42)))
    assert "does not move beyond its intervals" in flat and "rises" not in flat and "falls" not in flat


def _speed(mode, ratios, batch=4, config="AR greedy"):
    return {"mode": mode, "config": config, "batch": batch, "speedup": sorted(ratios)[len(ratios) // 2],
            "speedup_paired": {"min": min(ratios), "max": max(ratios)}}


def test_engine_speed_claims_follow_the_paired_ratios():
    slower = " ".join(report.speed_sentences([_speed("ar", [0.7, 0.8, 0.9])]))
    faster = " ".join(report.speed_sentences([_speed("ar", [1.1, 1.3, 1.2])]))
    mixed = " ".join(report.speed_sentences([_speed("ar", [0.9, 1.1, 1.0])]))
    assert "slower in every repetition" in slower and "faster" not in slower
    assert "faster than HF generate() in every repetition" in faster and "slower" not in faster
    assert "within the spread" in mixed and "faster" not in mixed and "slower" not in mixed


def _useful(mode, config, valid_words, seconds):
    return {"mode": mode, "config": config, "batch": 16, "valid_words": valid_words,
            "valid_words_per_s": valid_words / seconds, "seconds": {"q1": seconds * 0.95, "q3": seconds * 1.05}}


def test_valid_words_per_second_winner_follows_the_numbers():
    ar_wins = " ".join(report.usefulness_sentences([_useful("ar", "AR greedy", 100, 1.0), _useful("mp", "T=4", 40, 1.0)]))
    mp_wins = " ".join(report.usefulness_sentences([_useful("ar", "AR greedy", 100, 1.0), _useful("mp", "T=4", 300, 1.0)]))
    close = " ".join(report.usefulness_sentences([_useful("ar", "AR greedy", 100, 1.0), _useful("mp", "T=4", 101, 1.0)]))
    assert "AR delivers more valid words" in ar_wins and "mask-predict T=4 delivers" not in ar_wins
    assert "mask-predict T=4 delivers more valid words" in mp_wins and "AR delivers" not in mp_wins
    assert "does not separate" in close and "delivers more" not in close


def _roof(tflops, gbps):
    return {"ar_shape": {"bytes_per_param": 4}, "weight_bytes": 4e6, "bandwidth_gbps": gbps,
            "matmul_tflops": {"1": tflops, "4096": tflops}}


def test_memory_or_compute_bound_follows_intensity_and_ridge():
    rows = [{"mode": "ar", "batch": 8}]
    # intensity at batch 8 (fp32): 2 * 8 / 4 = 4 FLOP/byte
    memory = report._boundness(_roof(tflops=1.0, gbps=10.0), rows)[0]  # ridge 100
    compute = report._boundness(_roof(tflops=0.01, gbps=100.0), rows)[0]  # ridge 0.1
    assert "batch 8 memory-bound" in memory and "compute-bound" not in memory
    assert "batch 8 compute-bound" in compute and "memory-bound" not in compute


def test_no_sentence_is_pre_written():
    """The old report's fixed claims appear whatever the numbers: none may come back."""
    text = " ".join(report.quality_sentences(_quality(0.2, 0.9, 0.95)) + report.speed_sentences([_speed("mp", [2, 3, 4])])
                    + report._boundness(_roof(1.0, 10.0), [{"mode": "ar", "batch": 1}]))
    for fixed in ("deeply memory-bound", "once both are compute-bound", "whenever T < N", "AR wins"):
        assert fixed not in text


def test_cpu_targets_are_met_only_when_every_covered_point_reaches_them():
    at = lambda mode, batch, ratios: _speed(mode, ratios, batch=batch)  # noqa: E731
    met = " ".join(report.target_sentences([at("ar", 16, [1.3, 1.4, 1.5]), at("ar", 64, [1.2, 1.35, 1.6])]))
    assert "Target engine AR >= 1.3x HF at batch >= 16: met at all 2 points (lowest AR greedy at batch 64: 1.35x" in met
    missed = " ".join(report.target_sentences([at("mp", 16, [1.3, 1.4, 1.5]), at("mp", 64, [1.0, 1.1, 1.3])]))
    assert "Target engine MP >= 1.2x HF at batch >= 16: missed at 1 of 2 points (lowest AR greedy at batch 64: " \
           "1.10x (1.00-1.30))" in missed and "met at" not in missed
    small = report.target_sentences([at("mp", 1, [0.9, 0.99, 1.2])])
    assert small == ["Target engine MP >= 1.0x HF at batch 1-15: missed at 1 of 1 points (lowest AR greedy at batch "
                     "1: 0.99x (0.90-1.20))."]
    assert report.target_sentences([]) == []
