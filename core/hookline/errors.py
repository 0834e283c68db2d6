"""The few error kinds hookline speaks in.

Plugins translate their SDK's or protocol's failures into these, so that retry and
fallback policy lives once, in the engine (see STYLE.md, "one error vocabulary").
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HooklineError",
    "MissingSecret",
    "PluginError",
    "ProviderAuthError",
    "ProviderError",
    "ProviderProtocolError",
    "ProviderTimeout",
    "ProviderUnavailable",
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
    """A provider failed. `provider` is "kind/name", e.g. "stt/deepgram"."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "") -> None:
        self.provider = provider
        super().__init__(f"{provider}: {message}" if provider else message)


class ProviderAuthError(ProviderError):
    """Credentials were refused. Retrying will not help; the deployer must fix a key."""


class ProviderUnavailable(ProviderError):
    """Rate limited, overloaded, 5xx or the connection dropped: worth retrying."""

    retryable = True

    def __init__(
        self, message: str, *, provider: str = "", retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider)


class ProviderTimeout(ProviderError):
    """The provider did not answer within the configured bound."""

    retryable = True


class ProviderProtocolError(ProviderError):
    """The provider answered something that breaks its own protocol."""
