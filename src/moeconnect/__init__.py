"""moeconnect: a self-hostable, wire-compatible Test Connection API and credential system."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
