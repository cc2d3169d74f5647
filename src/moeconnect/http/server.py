"""The server stack every moeconnect process runs on: uvicorn, uvloop and httptools.

One place for uvicorn's options, so ``moeconnect serve`` and the benchmark's peers
(``bench/peers/``) run on exactly the same stack.
"""

from __future__ import annotations

from typing import Any

from .connections import ConnectionLimits
from .protocol import BoundedHttpToolsProtocol

__all__ = ["uvicorn_options"]


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that don't depend on the command line (the idle
    timeout comes from ``MOECONNECT_IDLE_TIMEOUT``, which ``moeconnect serve`` sets)."""
    return {
        "loop": "uvloop",
        # httptools, with request heads bounded and protocol errors in the JSON envelope.
        "http": BoundedHttpToolsProtocol,
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        # Client addresses are resolved by moeconnect itself, only from --trusted-proxy peers.
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
        # Idle kept-alive connections; the head deadline and the connection cap are the
        # protocol's own (.connections).
        "timeout_keep_alive": ConnectionLimits.from_env().idle_timeout,
    }
