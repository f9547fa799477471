"""The metrics seam: every EC2 and IMDS call is reported here, so ipamd can export upstream's metrics.

ipamd implements :class:`ApiObserver` with prometheus-client (awsutils never imports it):
``on_call`` feeds ``awscni_aws_api_latency_ms{api,error,status}``, ``awscni_aws_api_error_count{api,error}``,
``awscni_ec2api_req_count{fn}`` and ``awscni_ec2api_error_count{fn}``; ``api`` is the EC2 action name
(e.g. ``CreateNetworkInterface``) or ``GetMetadata`` for IMDS reads, as upstream labels them.
"""

from __future__ import annotations

from typing import Protocol

IMDS_API = "GetMetadata"


class ApiObserver(Protocol):
    def on_call(self, api: str, duration_s: float, error_code: str | None) -> None:
        """One finished API call (``error_code`` is None on success), SDK retries included."""

    def on_throttle_wait(self, category: str, seconds: float) -> None:
        """The client-side rate limiter made a ``category`` ("mutating"/"read") call wait ``seconds``."""


class NullObserver:
    """Observer that records nothing (the default)."""

    def on_call(self, api: str, duration_s: float, error_code: str | None) -> None:
        return None

    def on_throttle_wait(self, category: str, seconds: float) -> None:
        return None
