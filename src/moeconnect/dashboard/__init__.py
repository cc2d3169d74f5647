"""The web dashboard: the "Settings › Account › APIs" page of each workspace.

Server-rendered with Jinja2, one small stylesheet and one tiny script (copy buttons). Mounted by
:mod:`moeconnect.http.app` under ``/dashboard``.
"""

from __future__ import annotations

from .views import dashboard_routes

__all__ = ["dashboard_routes"]
