"""The shop's web dashboard: live calls, the call history, the work queue, trends.

Served by `hookline serve` under /admin (`mount_for`), or alone by `hookline dashboard`
(see cli.py). See docs/dashboard.md.
"""

from __future__ import annotations

from typing import Any

from .app import Dashboard, build_dashboard
from .data import Analytics, open_file, open_live, open_parquet

__all__ = [
    "PREFIX",
    "Analytics",
    "Dashboard",
    "build_dashboard",
    "mount_for",
    "open_file",
    "open_live",
    "open_parquet",
]

PREFIX = "/admin"


def mount_for(runtime: Any) -> list[tuple[str, Any]]:
    """`[(PREFIX, app)]` for a started runtime, or `[]` when `[dashboard] enabled = false`.

    Reads the database the runtime's analytics writer holds (in this process)."""
    config = runtime.config
    if not config.dashboard.enabled:
        return []
    opener = None
    if config.analytics.enabled:
        opener = open_live(config.resolve_path(config.analytics.database))
    analytics = Analytics(opener, config.agent.timezone)
    return [(PREFIX, build_dashboard(config, analytics, runtime=runtime, source="live"))]
