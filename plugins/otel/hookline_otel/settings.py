"""The trace exporter's settings, read from the standard OpenTelemetry environment.

hookline's config file has no section for observer plugins (`Config` is closed: an
unknown top-level table is an error, and only providers and tool sets get sections of
their own), so this plugin is configured the way every OpenTelemetry SDK is, through
the `OTEL_*` variables, plus one of its own for the one hookline-specific choice:

- `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (a full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT`
  (a base URL; `/v1/traces` is appended): where traces go. Neither set: tracing is off,
  so installing the plugin never makes a process send anything unasked.
- `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,...`
  sent with every export (the collector's auth, e.g. `authorization=Bearer%20...`).
- `OTEL_SDK_DISABLED=true`: off, whatever else is set.
- `HOOKLINE_OTEL_TRANSCRIPTS=true`: put what was said (and tool arguments, results,
  DTMF digits) on the spans. Off by default: a trace backend is rarely the place for
  what callers say.
- The SDK reads the rest itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
  `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_COMPRESSION`, the
  `OTEL_EXPORTER_OTLP_*CERTIFICATE` files, `OTEL_BSP_*` and `OTEL_TRACES_SAMPLER`.

Caller numbers on spans follow `[analytics] caller_numbers`, like the logs do.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from hookline import Seconds

__all__ = ["OtelSettings"]

_TRUE = frozenset({"1", "true", "yes", "on"})


class OtelSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Where and how one runtime's traces are exported."""

    endpoint: str  # the full OTLP/HTTP traces URL: http://collector:4318/v1/traces
    # The environment variable holding the headers (`key=value,...`) sent with each export.
    headers_env: str = "OTEL_EXPORTER_OTLP_HEADERS"
    include_transcripts: bool = False
    # How long `hookline_runtime_stopping` waits for the last spans to leave.
    shutdown_timeout_s: Seconds = 5.0

    @classmethod
    def from_environ(cls, lookup: Callable[[str], str | None]) -> OtelSettings | None:
        """The settings the environment asks for, or None when tracing is off.

        `lookup` reads one variable (`runtime.secrets.optional`), so a test's or an
        embedding application's environment is the one used.
        """
        if (lookup("OTEL_SDK_DISABLED") or "").strip().lower() in _TRUE:
            return None
        endpoint = lookup("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint:
            base = lookup("OTEL_EXPORTER_OTLP_ENDPOINT")
            if not base:
                return None
            endpoint = base.rstrip("/") + "/v1/traces"  # the OTLP exporter spec's rule
        headers_env = "OTEL_EXPORTER_OTLP_HEADERS"
        if lookup("OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
            headers_env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        transcripts = (lookup("HOOKLINE_OTEL_TRANSCRIPTS") or "").strip().lower() in _TRUE
        return cls(endpoint=endpoint, headers_env=headers_env, include_transcripts=transcripts)
