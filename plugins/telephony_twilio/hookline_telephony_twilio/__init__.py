"""Twilio for hookline: Media Streams telephony (`[providers] telephony = "twilio"`) and
the `sms` notification channel (`[notifications.sms]`)."""

from __future__ import annotations

from hookline import ChannelSpec, ProviderSpec, hookimpl

from .settings import TwilioSettings
from .sms import SmsChannel, SmsSettings, channel_spec
from .telephony import TwilioTelephony

__all__ = [
    "SmsChannel",
    "SmsSettings",
    "TwilioSettings",
    "TwilioTelephony",
    "hookline_notification_channels",
    "hookline_providers",
]


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


@hookimpl
def hookline_notification_channels() -> list[ChannelSpec]:
    """`[notifications.sms]`: texts through Twilio's Messages API (see `sms.py`)."""
    return [channel_spec()]
