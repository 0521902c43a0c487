"""Tuning of the delivery worker, from environment variables (tests replace it with small delays)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fhir_server.notify.endpoints import EndpointPolicy

DAY_SECONDS = 86_400


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class NotifyConfig:
    # How long the worker sleeps when it found nothing to do (it is also woken by writes).
    poll_seconds: float = field(default_factory=lambda: _float("FHIR_NOTIFY_POLL_SECONDS", 1.0))
    # Exponential backoff of a failing channel: base * 2**(failures - 1), capped.
    retry_base_seconds: float = field(default_factory=lambda: _float("FHIR_NOTIFY_RETRY_BASE_SECONDS", 2.0))
    retry_max_seconds: float = field(default_factory=lambda: _float("FHIR_NOTIFY_RETRY_MAX_SECONDS", 600.0))
    # Consecutive failures after which the Subscription goes to status `error`.
    max_failures: int = field(default_factory=lambda: _int("FHIR_NOTIFY_MAX_FAILURES", 10))
    http_timeout_seconds: float = field(default_factory=lambda: _float("FHIR_NOTIFY_HTTP_TIMEOUT_SECONDS", 10.0))
    # A claimed item whose worker died is taken up again after this long.
    lease_seconds: float = field(default_factory=lambda: _float("FHIR_NOTIFY_LEASE_SECONDS", 120.0))
    # Items handled per worker round before it looks at statuses again.
    batch: int = field(default_factory=lambda: _int("FHIR_NOTIFY_BATCH", 50))
    # Finished deliveries (the $status log) are removed this long after they finished; 0 keeps them.
    delivery_log_ttl_days: float = field(default_factory=lambda: _float("FHIR_NOTIFY_DELIVERY_LOG_TTL_DAYS", 30.0))
    # The rest-hook endpoints the server may call (FHIR_SUBSCRIPTION_ENDPOINTS, see endpoints.py).
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy.from_environment)

    @property
    def delivery_log_ttl_seconds(self) -> int | None:
        """The TTL of finished deliveries, None when they are kept for ever."""
        return round(self.delivery_log_ttl_days * DAY_SECONDS) if self.delivery_log_ttl_days > 0 else None

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th consecutive failure."""
        return min(self.retry_base_seconds * 2 ** max(failures - 1, 0), self.retry_max_seconds)
