"""Can this process reach the W&B server? A quick TCP check before an online ``wandb.init``.

An online ``wandb.init`` against a server that refuses or drops connections retries inside the W&B
service for its own deadline and then waits ``init_timeout`` plus a fixed 10 s grace (wandb 0.31): about
13 s at the shortest, 100 s with the defaults. Connecting to the server's host and port first (a few
seconds at most) lets `cdflow.training.loggers.make_logger` fall back to CSV at once instead.

With an HTTP(S) proxy configured the server is reached through the proxy, so no direct check is made.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.wandb.ai"
#: ``WANDB_INIT_TIMEOUT`` unless set: W&B's default is 90 s.
DEFAULT_INIT_TIMEOUT = 30.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def server_address(base_url: str | None = None) -> tuple[str, int]:
    """(host, port) of ``base_url`` (default ``$WANDB_BASE_URL`` or the public W&B server)."""
    url = urlsplit(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname or "", port


def unreachable_reason(base_url: str | None = None, timeout: float = 3.0) -> str | None:
    """Why the W&B server cannot be reached (``None``: it accepts connections, or a proxy is in use)."""
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return None
    host, port = server_address(base_url)
    if not host:
        return f"WANDB_BASE_URL={os.environ.get('WANDB_BASE_URL')!r} names no host"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"cannot connect to the W&B server {host}:{port} ({type(err).__name__}: {err})"


def init_timeout() -> float:
    """Seconds ``wandb.init`` may take: ``$WANDB_INIT_TIMEOUT``, else `DEFAULT_INIT_TIMEOUT`."""
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT))
    except ValueError:
        return DEFAULT_INIT_TIMEOUT
