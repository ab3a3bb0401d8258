"""Small statistics the reports share: intervals, spreads and distances between histograms."""
import math
import statistics

Z95 = 1.959963984540054


def wilson(successes, trials, z=Z95):
    """The Wilson score interval (lo, hi) of a binomial proportion; (0, 1) with no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes, trials):
    """{"value", "lo", "hi", "n"}: a proportion with its 95% Wilson interval."""
    lo, hi = wilson(successes, trials)
    return {"value": successes / trials if trials else None, "lo": lo, "hi": hi, "n": trials}


def proportion_text(p):
    """'95.6% [94.1%, 96.7%]': a proportion with its interval, one decimal (an interval of 1000
    samples is a few points wide, and 99.6% must not print as 100%)."""
    return f"{p['value']:.1%} [{p['lo']:.1%}, {p['hi']:.1%}]"


def spread(values):
    """{"median", "q1", "q3", "min", "max", "n"} of repeated measurements."""
    values = sorted(values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "min": values[0], "max": values[-1],
            "n": len(values)}


def histogram(values, bins):
    """Normalised counts of integer `values` over 0..bins-1 (larger values go to the last bin)."""
    counts = [0] * bins
    for v in values:
        counts[min(int(v), bins - 1)] += 1
    total = sum(counts)
    return [c / total for c in counts] if total else counts


def total_variation(p, q):
    """Total variation distance between two histograms over the same bins (0 = equal, 1 = disjoint)."""
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))
