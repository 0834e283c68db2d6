"""Twilio Media Streams telephony for hookline: `[providers] telephony = "twilio"`."""

from __future__ import annotations

from hookline import ProviderSpec, hookimpl

from .settings import TwilioSettings
from .telephony import TwilioTelephony

__all__ = ["TwilioSettings", "TwilioTelephony", "hookline_providers"]


@hookimpl
def hookline_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            kind="telephony",
            name="twilio",
            settings=TwilioSettings,
            create=TwilioTelephony.create,
        )
    ]
