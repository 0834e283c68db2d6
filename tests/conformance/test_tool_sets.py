"""The tool set suite against the built-in tools and the example tow plugin, each built
the way a deployment builds it: enabled in a config, found through its entry point."""

from __future__ import annotations

import pytest

from hookline import builtin_tools
from hookline.testing.conformance import ToolSetConformance
from hookline.testing.harness import make_config, scripted_runtime


class TestBuiltinTools(ToolSetConformance):
    @pytest.fixture
    def toolset(self):
        (toolset,) = builtin_tools.hookline_toolsets()
        return toolset

    @pytest.fixture
    async def tools(self):
        # With a transfer number, so that transfer_call is offered and checked too.
        config = make_config(agent={"transfer_number": "+15550001111"})
        runtime = await scripted_runtime(config, start=False)
        return list(runtime.tools.values())

    @pytest.fixture
    def tool_args(self):
        return {"end_call": '{"goodbye": "Bye now."}', "transfer_call": '{"reason": "billing"}'}

    @pytest.fixture
    def side_effect_tools(self):
        return {"end_call", "transfer_call"}

    async def test_both_tools_are_checked(self, tools):
        assert {t.name for t in tools} == {"end_call", "transfer_call"}


class TestTowRequestTools(ToolSetConformance):
    @pytest.fixture
    def toolset(self):
        from hookline_example_tow import hookline_toolsets

        (toolset,) = hookline_toolsets()
        return toolset

    @pytest.fixture
    async def tools(self, tmp_path):
        config = make_config(
            providers={"tools": ["tow_requests"]},
            tools={"tow_requests": {"database": str(tmp_path / "tow.duckdb")}},
        )
        runtime = await scripted_runtime(config, installed=True, start=False)
        return list(runtime.tools.values())

    @pytest.fixture
    def tool_args(self):
        request = '{"location": "I-90 exit 12", "vehicle": "2015 blue Honda Fit", '
        return {"request_tow": request + '"problem": "flat tire"}'}

    @pytest.fixture
    def refused_tool_args(self):
        return {"request_tow": ['{"location": "  ", "vehicle": "a van", "problem": "stalled"}']}

    @pytest.fixture
    def side_effect_tools(self):
        return {"request_tow"}
