"""Logging with the call id: every line about a call says which call it is about."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["CallLog", "call_log"]


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
