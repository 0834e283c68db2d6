"""`[tools.messages]`: where taken messages are kept."""

from __future__ import annotations

import msgspec

from hookline import PhoneNumber

__all__ = ["MessageSettings"]


class MessageSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`database`: the DuckDB file, relative to the config file, with `[storage]
    backend = "duckdb"` (the default). The store opens it only while it writes or reads,
    so `hookline messages` can read it while the server runs. With `backend =
    "postgresql"` the messages are in the shared database instead (this is unused)."""

    database: str = "data/messages.duckdb"

    # Who hears about a taken message at once, through the outbox: a text to the shop's
    # dispatcher number (`notify_sms`, E.164; none when unset) and the signed webhook
    # (`notify_webhook`; sent when `[notifications.webhook]` is configured). The text is
    # `sms_template` with {shop}, {name}, {callback}, {urgency}, {reason}, {id}.
    notify_sms: PhoneNumber | None = None
    notify_webhook: bool = True
    sms_template: str = "{shop}: {urgency} call-back for {name} at {callback}: {reason} ({id})"

    def __post_init__(self) -> None:
        fields = dict.fromkeys(("shop", "name", "callback", "urgency", "reason", "id"), "x")
        try:
            self.sms_template.format_map(fields)
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(
                f"sms_template: bad template ({type(e).__name__}: {e}); fields are "
                "{shop} {name} {callback} {urgency} {reason} {id}"
            ) from None
