"""hookline's OpenAI LLM provider (`[providers] llm = "openai"`): streamed chat
completions from OpenAI or any OpenAI-compatible server (vLLM, Ollama, ...)."""

from __future__ import annotations

from urllib.parse import urlsplit

from hookline import ProviderContext, ProviderSpec, hookimpl

from .llm import OpenAILLM
from .settings import OpenAISettings

__all__ = ["OpenAILLM", "OpenAISettings", "create", "needs_key"]

# A local server that needs no key (api_key_env = "") still needs a non-empty string for
# the SDK; this one is sent as the bearer token and ignored by such servers.
_NO_KEY = "not-needed"


def needs_key(settings: OpenAISettings) -> bool:
    """OpenAI itself needs a key; another compatible server (Ollama, vLLM, the fake)
    gets one when its variable is set, and runs without one when it is not."""
    if not settings.api_key_env:
        return False
    host = urlsplit(settings.base_url).hostname if settings.base_url else "api.openai.com"
    return host is None or host == "openai.com" or host.endswith(".openai.com")


def create(settings: OpenAISettings, ctx: ProviderContext) -> OpenAILLM:
    if needs_key(settings):
        api_key = ctx.secret(settings.api_key_env, key="api_key_env")
    else:
        api_key = (settings.api_key_env and ctx.secrets.optional(settings.api_key_env)) or _NO_KEY
    first_token = settings.first_token_timeout_s or ctx.policy.llm_first_token_timeout_s
    return OpenAILLM(
        settings,
        api_key=api_key,
        first_token_timeout_s=first_token,
        thread_limiter=ctx.thread_limiter,
    )


@hookimpl
def hookline_providers() -> list[ProviderSpec]:
    return [ProviderSpec(kind="llm", name="openai", settings=OpenAISettings, create=create)]
