"""Prometheus metrics for the process, served at ``/metrics``.

Each app gets its own registry so tests (and several apps in one process) stay independent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    """The bot's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("exotel_active_calls", "Calls in progress", registry=r)
        self.calls_total = Counter(
            "exotel_calls",
            "Calls ended, by end reason and who ended them",
            ["reason", "by"],
            registry=r,
        )
        self.calls_refused = Counter(
            "exotel_calls_refused",
            "Streams refused before a call started, by reason",
            ["reason"],
            registry=r,
        )
        self.inbound_rejected = Counter(
            "exotel_inbound_rejected",
            "Inbound messages dropped, by reason",
            ["reason"],
            registry=r,
        )
        self.inbound_events = Counter(
            "exotel_inbound_events", "Inbound Exotel events, by event", ["event"], registry=r
        )
        self.outbound_chunks = Counter(
            "exotel_outbound_chunks",
            "Media messages sent, by payload bytes",
            ["bytes"],
            registry=r,
        )
        self.chunk_violations = Counter(
            "exotel_outbound_chunk_violations",
            "Media messages breaking Exotel's chunk rule",
            registry=r,
        )
        self.response_latency = Histogram(
            "exotel_response_latency_seconds",
            "Caller end of speech to first bot audio sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.holding_latency = Histogram(
            "exotel_holding_phrase_latency_seconds",
            "Caller turn end to holding phrase audio sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.clear_latency = Histogram(
            "exotel_barge_in_clear_latency_seconds",
            "Caller speech onset (VAD start) to clear sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_in_resumes = Counter(
            "exotel_barge_in_resumes",
            "Pauses at a possible caller onset that were not speech: the cleared audio was "
            "sent again",
            registry=r,
        )
        self.provider_ttfb = Histogram(
            "exotel_provider_ttfb_seconds",
            "Provider time to first byte",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._add_shared_state_metrics(r)

    def _add_shared_state_metrics(self, r: CollectorRegistry) -> None:
        """What leaves the call's process: state store writes and post-call webhooks."""
        self.state_write_retries = Counter(
            "exotel_state_write_retries",
            "State store writes kept for retry (or retried) while the store was unreachable",
            registry=r,
        )
        self.webhook_events = Counter(
            "exotel_webhook_events",
            "Post-call webhook attempts settled or retried, by state "
            "(delivered, retried, dead, gone)",
            ["state"],
            registry=r,
        )
        self.webhook_pending = Gauge(
            "exotel_webhook_pending", "Webhook events waiting for delivery", registry=r
        )

    def webhook_event(self, state: str) -> None:
        """The outbox's ``on_event`` callback."""
        self.webhook_events.labels(state=state).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
