"""Who may read ``/metrics``: it lists every tenant's models and counts.

With a master key: a request carrying it, or the scrape token (``metrics_token``), as
``Authorization: Bearer`` or ``x-api-key``. In open mode (no master key): a client on
a loopback address, or one carrying the scrape token when one is set. Compared in
constant time; the answer to anyone else is 401 (403 for a remote client in open mode).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

from ..config import Config
from ..events import GatewayError
from ..store.auth import credential


def _loopback(client: Any) -> bool:
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def scrape_refusal(config: Config, headers: Mapping[str, str], client: Any) -> GatewayError | None:
    """None when the request may read the metrics; else the error to answer with."""
    given = credential(headers)
    secrets = [s for s in (config.master_key, config.metrics_token) if s]
    if given is not None and any(hmac.compare_digest(given, s) for s in secrets):
        return None
    if config.master_key is None and _loopback(client):
        return None
    if config.master_key is None and given is None:
        return GatewayError(
            "permission", "/metrics is served to loopback clients only in open mode.", status=403
        )
    return GatewayError(
        "authentication",
        "/metrics needs the master key or the scrape token (metrics_token).",
        status=401,
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )
