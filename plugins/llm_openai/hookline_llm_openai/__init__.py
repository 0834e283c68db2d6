"""hookline's OpenAI LLM provider (`[providers] llm = "openai"`): streamed chat
completions from OpenAI or any OpenAI-compatible server (vLLM, Ollama, ...)."""

from __future__ import annotations

from hookline import ProviderContext, ProviderSpec, hookimpl

from .llm import OpenAILLM
from .settings import OpenAISettings

__all__ = ["OpenAILLM", "OpenAISettings", "create"]

# A local server that needs no key (api_key_env = "") still needs a non-empty string for
# the SDK; this one is sent as the bearer token and ignored by such servers.
_NO_KEY = "not-needed"


def create(settings: OpenAISettings, ctx: ProviderContext) -> OpenAILLM:
    api_key = (
        ctx.secret(settings.api_key_env, key="api_key_env") if settings.api_key_env else _NO_KEY
    )
    first_token = settings.first_token_timeout_s or ctx.policy.llm_first_token_timeout_s
    return OpenAILLM(settings, api_key=api_key, first_token_timeout_s=first_token)


@hookimpl
def hookline_providers() -> list[ProviderSpec]:
    return [ProviderSpec(kind="llm", name="openai", settings=OpenAISettings, create=create)]
