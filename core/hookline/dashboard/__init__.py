"""The shop's web dashboard: live calls, the call history, the work queue, trends.

Served by `hookline serve` under /admin (`mount_for`), or alone by `hookline dashboard`
(see cli.py). See docs/dashboard.md.
"""

from __future__ import annotations

from typing import Any

from .app import Dashboard, build_dashboard
from .data import Analytics, open_file, open_live, open_parquet, segments_analytics

__all__ = [
    "PREFIX",
    "Analytics",
    "Dashboard",
    "analytics_for",
    "build_dashboard",
    "mount_for",
    "open_file",
    "open_live",
    "open_parquet",
    "segments_analytics",
]

PREFIX = "/admin"


def mount_for(runtime: Any) -> list[tuple[str, Any]]:
    """`[(PREFIX, app)]` for a started runtime, or `[]` when `[dashboard] enabled = false`."""
    config = runtime.config
    if not config.dashboard.enabled:
        return []
    analytics, source = analytics_for(runtime)
    return [(PREFIX, build_dashboard(config, analytics, runtime=runtime, source=source))]


def analytics_for(runtime: Any) -> tuple[Analytics, str]:
    """What /admin reads in a serving process, and its source ("live" or "workers").

    The process alone: the database its analytics writer holds, up to the last call.
    One of `hookline serve --workers N`: that file has only this worker's calls, so the
    finished calls of every worker (the shared Parquet segments, as `hookline dashboard`
    reads them; a call appears when its segment lands, a few seconds after it ends)."""
    config = runtime.config
    if not config.analytics.enabled:
        return Analytics(None, config.agent.timezone), "live"
    folder = config.analytics_segments
    if runtime.worker_index is not None and folder is not None:
        folder.mkdir(parents=True, exist_ok=True)  # no call finished yet: an empty dataset
        return segments_analytics(folder, config.agent.timezone), "workers"
    opener = open_live(config.resolve_path(config.analytics.database))
    return Analytics(opener, config.agent.timezone), "live"
