"""hookline's tool set suite against the calendar tools, on both backends (the Google
fake and DuckDB): `make_shop` is this plugin's fixture, parametrized by backend."""

from __future__ import annotations

from typing import Any

import pytest
from calendar_google_helpers import ShopFactory

from hookline.testing.conformance import ToolSetConformance
from hookline_calendar_google import hookline_toolsets


class TestCalendarTools(ToolSetConformance):
    @pytest.fixture
    def toolset(self) -> Any:
        (toolset,) = hookline_toolsets()
        return toolset

    @pytest.fixture
    def tools(self, make_shop: ShopFactory) -> list[Any]:
        return list(make_shop().tools.values())

    @pytest.fixture
    def tool_args(self) -> dict[str, str]:
        return {
            "check_availability": '{"service": "oil change", "earliest": "2026-03-09"}',
            "book_appointment": '{"service": "brakes", "start": "2026-03-09T09:00", '
            '"customer_name": "Alice", "vehicle": "2018 Honda Civic"}',
            "find_appointments": "{}",
            "reschedule_appointment": '{"appointment_id": "a1", "new_start": "2026-03-11T10:00"}',
            "cancel_appointment": '{"appointment_id": "a1"}',
        }

    @pytest.fixture
    def refused_tool_args(self) -> dict[str, list[str]]:
        return {
            "check_availability": ['{"service": "oil change", "earliest": "next blursday"}'],
            "book_appointment": [
                # In the past (the shop's clock says 6 March 2026), and on a closed day.
                '{"service": "brakes", "start": "2026-03-02T09:00", "customer_name": "A", '
                '"vehicle": "a van"}',
                '{"service": "brakes", "start": "2026-03-10T09:00", "customer_name": "A", '
                '"vehicle": "a van"}',
            ],
            "cancel_appointment": ['{"appointment_id": "no-such-appointment"}'],
            "reschedule_appointment": [
                '{"appointment_id": "no-such-appointment", "new_start": "2026-03-11T10:00"}'
            ],
        }

    @pytest.fixture
    def side_effect_tools(self) -> set[str]:
        return {"book_appointment", "reschedule_appointment", "cancel_appointment"}
