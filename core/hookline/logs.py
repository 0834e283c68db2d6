"""Logging with the call id: every line about a call says which call it is about."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["CallLog", "call_log", "shown_number"]


class CallLog(logging.LoggerAdapter):
    """Prefixes every message with the call id and puts it on the record as `call_id`."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        call_id = self.extra["call_id"] if self.extra else "-"
        kwargs.setdefault("extra", {})["call_id"] = call_id
        return f"[call {call_id}] {msg}", kwargs


def call_log(logger: logging.Logger | str, call_id: str) -> CallLog:
    """`call_log("hookline.stt.deepgram", call.call_id).info(...)`"""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    return CallLog(logger, {"call_id": call_id})


def shown_number(number: str | None, runtime: Runtime) -> str:
    """A phone number as a log line may show it: the log keeps no more than the database.

    `[analytics] caller_numbers = "hashed"` shows the start of the same salted hash the
    `calls` table holds (enough to find the row), "drop" shows no number at all.
    """
    cfg = runtime.config.analytics
    if not number:
        return "unknown"
    if cfg.caller_numbers == "plain":
        return number
    salt = runtime.secrets.optional(cfg.hash_salt_env)
    if cfg.caller_numbers == "drop" or salt is None:
        return "(number withheld)"
    from .analytics.rows import hash_number  # the database's hash, not a second one

    return "#" + hash_number(number, salt.encode())[:12]
