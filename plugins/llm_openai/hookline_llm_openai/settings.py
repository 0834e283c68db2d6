"""`[llm.openai]`: settings of the OpenAI chat completions provider."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from hookline import NonNegativeSeconds, PositiveInt, Seconds

__all__ = ["OpenAISettings"]


class OpenAISettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Example:

    [llm.openai]
    model = "gpt-4o"
    temperature = 0.3
    base_url = "http://127.0.0.1:11434/v1"   # any OpenAI-compatible server
    """

    model: str = "gpt-4o"
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = 0.3
    # Caps one response. A phone answer is a few sentences; None leaves it to the server.
    max_tokens: PositiveInt | None = 300
    # OpenAI wants max_completion_tokens; older compatible servers only know max_tokens.
    max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    # The environment variable holding the key. "" for a local server that needs none.
    api_key_env: str = "OPENAI_API_KEY"
    base_url: str | None = None  # None: https://api.openai.com/v1
    organization: str | None = None
    project: str | None = None
    parallel_tool_calls: bool = True
    # From sending the request to the first streamed token (per attempt). None takes
    # [policy] llm_first_token_timeout_s.
    first_token_timeout_s: Seconds | None = None
    # The whole response, retries included.
    total_timeout_s: Seconds = 30.0
    # Retries (429 honouring retry-after, 5xx, connection errors) happen only while the
    # time since the request started plus the next wait stays within this bound: it is
    # how long the caller may hear silence before the engine speaks its fallback line.
    max_retry_wait_s: NonNegativeSeconds = 3.0
    # How long an idle connection to the server is kept for the next request. A call's
    # requests are seconds apart (the caller speaks, the answer plays): the HTTP stack's
    # 5 s default would open a new TCP and TLS connection for nearly every turn.
    keepalive_s: Seconds = 90.0
    # History sent to the model is trimmed to about this many tokens (oldest turns first).
    context_tokens: PositiveInt = 8000
