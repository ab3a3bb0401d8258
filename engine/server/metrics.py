"""The server's Prometheus metrics (GET /metrics), in a registry of its own.

Engine state (requests running and waiting, KV blocks used and in all, preemptions so far) is
read from the engine loop's latest `Engine.stats()` snapshot when scraped. The engine loop
counts the rest as outputs arrive: generated tokens (a masked LM's N slots count at its
first pass), prompt tokens, finished requests by finish reason, and the TTFT, TPOT and
end-to-end latency of each finished request (the engine's own timings, from arrival at the
server).
"""
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "duodecode"
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


class EngineStatsCollector:
    """Scrape-time gauges (and the preemption counter) from a stats snapshot."""

    def __init__(self, stats: Callable[[], dict], model_name: str):
        self.stats, self.model_name = stats, model_name

    def collect(self):
        s = self.stats()
        used = s["num_kv_blocks"] - s["num_free_kv_blocks"]
        gauges = (
            ("num_requests_running", "Requests in the engine's running batch.", s["num_running"]),
            ("num_requests_waiting", "Requests queued for admission.", s["num_waiting"]),
            ("kv_blocks_used", "KV cache blocks held by requests (0 for a masked LM).", used),
            ("kv_blocks_total", "KV cache blocks in all (0 for a masked LM).", s["num_kv_blocks"]),
        )
        for name, doc, value in gauges:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["model_name"])
            family.add_metric([self.model_name], value)
            yield family
        preemptions = CounterMetricFamily(f"{PREFIX}_num_preemptions", "Requests preempted so far.",
                                          labels=["model_name"])
        preemptions.add_metric([self.model_name], s["num_preemptions"])
        yield preemptions


class ServerMetrics:
    def __init__(self, model_name: str, stats: Callable[[], dict]):
        self.registry = registry = CollectorRegistry()
        registry.register(EngineStatsCollector(stats, model_name))
        labels = {"model_name": model_name}

        def counter(name, doc, *extra_labels):
            return Counter(f"{PREFIX}_{name}", doc, ["model_name", *extra_labels], registry=registry)

        def histogram(name, doc, buckets):
            return Histogram(f"{PREFIX}_{name}", doc, ["model_name"], buckets=buckets, registry=registry).labels(**labels)

        self.model_name = model_name
        self.generation_tokens = counter("generation_tokens", "Tokens generated.").labels(**labels)
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens of requests that ran to the end.").labels(**labels)
        self.requests_finished = counter("requests_finished", "Finished requests by finish reason.", "finish_reason")
        self.ttft = histogram("time_to_first_token_seconds", "Arrival to first token.", TTFT_BUCKETS)
        self.tpot = histogram("time_per_output_token_seconds", "Mean time per token after the first.", TPOT_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Arrival to the last token.", E2E_BUCKETS)

    def on_tokens(self, count: int) -> None:
        if count > 0:
            self.generation_tokens.inc(count)

    def on_finished(self, finish_reason: str, output=None) -> None:
        """Count a request that ended (finished, failed or aborted); with its final
        RequestOutput, record its prompt tokens and latencies too."""
        self.requests_finished.labels(model_name=self.model_name, finish_reason=finish_reason).inc()
        if output is None:
            return
        self.prompt_tokens.inc(len(output.prompt_token_ids))
        m = output.metrics
        for histogram, value in ((self.ttft, m.ttft), (self.tpot, m.tpot), (self.e2e, m.e2e)):
            if value is not None:
                histogram.observe(value)

    def exposition(self) -> tuple[bytes, str]:
        """(the Prometheus text, its content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
