"""The system prompt: the `[agent]` instructions as a template rendered for each call.

The instructions are a Jinja2 template (sandboxed: a template is config, and config must
not reach into Python; undefined names are errors, never silent blanks). It is compiled
once per runtime, checked at start-up and by `hookline check` with a sample call, and
rendered when each call's engine starts with:

- `shop`: `name`, `address`, `phone` from `[agent]`;
- `now` (an aware datetime in `agent.timezone`), `today` (ISO date, what the tools take),
  `weekday` ("Monday"), `date` ("November 30, 2026"), `time` ("9:05 AM"), `timezone`;
- `caller`: `known` (the carrier gave a caller id) and `number` (the caller id when
  `[analytics] caller_numbers = "plain"`, else "": the model sees no more than the
  database keeps; the tools still use the real number);
- `tools`: the names of the tools this call can use (`{% if "take_message" in tools %}`);
- whatever plugins add through `hookline_call_context` (the calendar plugin adds the
  shop's hours, closures, services, whether it is open now and the caller's upcoming
  appointments).

`system_messages` is the one function both the engine and `hookline prompt` call, so the
preview is exactly what the model gets.
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import SandboxedEnvironment

from .errors import ConfigError
from .hookspecs import hookimpl
from .logs import call_log
from .providers import CallInfo, Message

if TYPE_CHECKING:
    from .config import Config
    from .runtime import Runtime

__all__ = [
    "CORE_VARIABLES",
    "PromptTemplate",
    "check_prompt",
    "compile_prompt",
    "render_prompt",
    "system_messages",
]

log = logging.getLogger("hookline.prompt")

CORE_VARIABLES = ("shop", "now", "today", "weekday", "date", "time", "timezone", "caller", "tools")
# The call `hookline check` and start-up render with: no caller id, so plugins look up nothing.
SAMPLE_CALL = CallInfo(call_id="prompt-check")


@dataclass(frozen=True)
class PromptTemplate:
    """The compiled instructions of one config. `template` is None for no instructions."""

    template: jinja2.Template | None
    names: frozenset[str]  # the top-level variables the template reads
    file: str | None
    key: str

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=self.key)


def _environment() -> SandboxedEnvironment:
    # trim_blocks/lstrip_blocks: a `{% if %}` line leaves no blank line in the prompt.
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


def compile_prompt(config: Config) -> PromptTemplate:
    """Compile `[agent]` instructions; a syntax error is a one-line ConfigError."""
    agent = config.agent
    key = "agent.instructions_file" if agent.instructions_file else "agent.instructions"
    where = f"{config.resolve_path(agent.instructions_file)}: " if agent.instructions_file else ""
    file = config.path or None
    if not agent.instructions.strip():
        return PromptTemplate(None, frozenset(), file, key)
    env = _environment()
    try:
        ast = env.parse(agent.instructions)
        template = env.from_string(ast)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(
            f"{where}template error on line {e.lineno}: {e.message}", file=file, key=key
        ) from None
    # A name the template tests with `is defined` may be absent (a tool set not enabled).
    optional = {
        test.node.name
        for test in ast.find_all(jinja2.nodes.Test)
        if test.name in ("defined", "undefined") and isinstance(test.node, jinja2.nodes.Name)
    }
    names = frozenset(jinja2.meta.find_undeclared_variables(ast) - optional)
    return PromptTemplate(template, names, file, key)


# One compiled template per runtime (compiled at start-up, or at the first call of a
# runtime built without the prompt plugin, as the test harness does).
_compiled: weakref.WeakKeyDictionary[Runtime, PromptTemplate] = weakref.WeakKeyDictionary()


def _template(runtime: Runtime) -> PromptTemplate:
    compiled = _compiled.get(runtime)
    if compiled is None:
        compiled = _compiled[runtime] = compile_prompt(runtime.config)
    return compiled


def check_prompt(runtime: Runtime, now: dt.datetime | None = None) -> None:
    """Compile and render once with a sample call; raise ConfigError on a template that
    names a variable nobody provides or fails to render. Caches the compiled template."""
    compiled = _compiled[runtime] = compile_prompt(runtime.config)
    if compiled.template is None:
        return
    variables = call_variables(runtime, SAMPLE_CALL, now or _now())
    unknown = sorted(compiled.names - variables.keys())
    if unknown:
        raise compiled.error(
            f"the template uses {', '.join(map(repr, unknown))}, which nothing provides "
            f"(available: {', '.join(sorted(variables))})"
        )
    _render(compiled, variables)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _render(compiled: PromptTemplate, variables: Mapping[str, Any]) -> str:
    assert compiled.template is not None
    try:
        return compiled.template.render(variables).strip()
    except jinja2.TemplateError as e:
        line = _template_line(e)
        raise compiled.error(
            f"template error{f' on line {line}' if line else ''}: {e.message or e}"
        ) from None


def _template_line(e: BaseException) -> int | None:
    """The template line a render error happened on (Jinja puts template frames in the
    traceback under the name "<template>")."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == "<template>"]
    return lines[-1] if lines else None


def call_variables(runtime: Runtime, call: CallInfo, now: dt.datetime) -> dict[str, Any]:
    """Everything the template of one call may read: the core's variables, then each
    plugin's `hookline_call_context` (the first to give a name keeps it)."""
    config = runtime.config
    agent = config.agent
    local = now.astimezone(ZoneInfo(agent.timezone))
    plain = config.analytics.caller_numbers == "plain"
    variables: dict[str, Any] = {
        "shop": {"name": agent.name, "address": agent.address, "phone": agent.phone or ""},
        "now": local,
        "today": local.date().isoformat(),
        "weekday": f"{local:%A}",
        "date": f"{local:%B} {local.day}, {local.year}",
        "time": spoken_clock(local.time()),
        "timezone": agent.timezone,
        "caller": {
            "known": bool(call.from_number),
            "number": call.from_number if plain else "",
        },
        "tools": sorted(runtime.tools),
    }
    clog = call_log(log, call.call_id)
    contributions: list[tuple[str, Any]] = []
    for plugin, results in runtime._call_each(
        "hookline_call_context", runtime=runtime, call=call, now=now
    ):
        contributions.extend((plugin, added) for added in results or ())
    for variables_of in runtime.call_contexts:
        source = getattr(variables_of, "__qualname__", repr(variables_of))
        try:
            contributions.append((source, variables_of(call, now)))
        except Exception:
            clog.exception("%s: adding prompt variables failed", source)
    for source, added in contributions:
        if added is None:
            continue
        if not isinstance(added, Mapping):
            clog.warning("%s: prompt variables %r are not a dict", source, added)
            continue
        for name, value in added.items():
            if name in variables:
                clog.warning("%s: prompt variable %r is already set; ignored", source, name)
            else:
                variables[name] = value
    return variables


def spoken_clock(t: dt.time) -> str:
    """9:05 -> '9:05 AM', 12:00 -> 'noon', 0:00 -> 'midnight': how the agent says it."""
    if t.minute == 0 and t.hour in (0, 12):
        return "noon" if t.hour == 12 else "midnight"
    hour = t.hour % 12 or 12
    minute = f":{t.minute:02d}" if t.minute else ""
    return f"{hour}{minute} {'AM' if t.hour < 12 else 'PM'}"


def render_prompt(runtime: Runtime, call: CallInfo, now: dt.datetime | None = None) -> str:
    """The rendered instructions of one call ("" without instructions). Raises ConfigError."""
    compiled = _template(runtime)
    if compiled.template is None:
        return ""
    return _render(compiled, call_variables(runtime, call, now or _now()))


def system_messages(
    runtime: Runtime, call: CallInfo, now: dt.datetime | None = None
) -> list[Message]:
    """The history a call starts with: its system message, rendered for this call.

    A template that fails for this call alone (a branch the start-up check did not take)
    must not cost the caller the call: the failure is logged with the call id and the
    model gets a plain fallback that still carries the shop and the date.
    """
    now = now or _now()
    try:
        text = render_prompt(runtime, call, now)
    except ConfigError as e:
        call_log(log, call.call_id).error("the prompt did not render: %s", e)
        text = _fallback(runtime, now)
    return [Message(role="system", content=text)] if text else []


def _fallback(runtime: Runtime, now: dt.datetime) -> str:
    agent = runtime.config.agent
    local = now.astimezone(ZoneInfo(agent.timezone))
    return (
        f"You are the phone agent of {agent.name}. Today is {local:%A}, "
        f"{local:%B} {local.day}, {local.year} ({local.date().isoformat()}); it is "
        f"{spoken_clock(local.time())} ({agent.timezone}). Keep answers short and spoken. "
        "Never invent times, prices or policies; offer to have someone call back."
    )


@hookimpl
def hookline_runtime_started(runtime: Runtime) -> None:
    """Compile and check the template before the first call (raising stops start-up)."""
    check_prompt(runtime)
