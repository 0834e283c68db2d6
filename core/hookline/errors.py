"""The few error kinds hookline speaks in.

Plugins translate their SDK's or protocol's failures into these, so that retry and
fallback policy lives once, in the engine (see STYLE.md, "one error vocabulary").
"""

from __future__ import annotations

__all__ = [
    "RETRY_STATUSES",
    "ConfigError",
    "HooklineError",
    "MissingSecret",
    "PluginError",
    "ProviderAuthError",
    "ProviderError",
    "ProviderProtocolError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "error_for_status",
]


class HooklineError(Exception):
    """Base of every error hookline raises on purpose."""


class ConfigError(HooklineError):
    """A user mistake in a config file: names the file, the dotted key and the fix."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(one_line(f"{where}: {message}" if where else message))


def one_line(text: str) -> str:
    """Escape line breaks and other unprintables (a quoted TOML key may hold a newline):
    a config error is always exactly one line on the terminal."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class MissingSecret(ConfigError):
    """An environment variable named by a `*_env` key is not set."""

    def __init__(self, env_var: str, *, key: str | None = None, file: str | None = None) -> None:
        self.env_var = env_var
        super().__init__(
            f"environment variable {env_var} is not set (export {env_var}=...)",
            file=file,
            key=key,
        )


class PluginError(HooklineError):
    """A plugin is broken or two plugins clash (duplicate provider names, bad hook results)."""


class ProviderError(HooklineError):
    """A provider failed. `provider` is "kind/name", e.g. "stt/deepgram".

    `retryable` is what `hookline.retry.retry` reads to decide whether another try may
    help. Each kind below sets its default; a plugin overrides it for one error when it
    knows better (a timed-out transfer may have happened, so it is not retried).
    `retry_after` is the server's hint in seconds (Retry-After), when it gave one.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"{provider}: {message}" if provider else message)


class ProviderAuthError(ProviderError):
    """Credentials were refused. Retrying will not help; the deployer must fix a key."""


class ProviderUnavailable(ProviderError):
    """Rate limited, overloaded, 5xx or the connection dropped: worth retrying."""

    retryable = True


class ProviderTimeout(ProviderError):
    """The provider did not answer within the configured bound."""

    retryable = True


class ProviderProtocolError(ProviderError):
    """The provider answered something that breaks its own protocol."""


# Statuses that say "not now" rather than "no": a later try may succeed.
RETRY_STATUSES = frozenset({408, 429})


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    retry_after: float | None = None,
    auth_hint: str = "",
    refused_hint: str = "",
    refused: type[ProviderError] = ProviderError,
    retryable: bool | None = None,
) -> ProviderError:
    """The one mapping of an HTTP status (or a refused WebSocket handshake) to an error.

    401/403 -> ProviderAuthError (with `auth_hint` appended: which env var to fix);
    408, 429 and 5xx -> ProviderUnavailable, retryable, carrying `retry_after`;
    any other status -> `refused` (ProviderError by default; a plugin whose refusals mean
    "your settings break the protocol" passes ProviderProtocolError), with
    `refused_hint` appended (which settings to check). `retryable` overrides the kind's
    default for this one error.
    """
    if status in (401, 403):
        text = f"{message}; {auth_hint}" if auth_hint else message
        return ProviderAuthError(text, provider=provider, retryable=retryable)
    if status in RETRY_STATUSES or status >= 500:
        return ProviderUnavailable(
            message, provider=provider, retry_after=retry_after, retryable=retryable
        )
    text = f"{message}; {refused_hint}" if refused_hint else message
    return refused(text, provider=provider, retry_after=retry_after, retryable=retryable)
