"""The customer's vehicle: year, make and model, and if given its VIN, plate and mileage.

The model sends what the caller said (`VehicleParams`, loosely typed: "45,000" miles,
"2018" as text); `validate` turns it into a `Vehicle` or raises a `ToolError` whose
sentence tells the model what to ask again ("A VIN has 17 characters...").
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from hookline import ToolError

__all__ = ["Vehicle", "VehicleParams", "validate_vehicle"]

_VIN_LETTERS = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")  # no I, O or Q
_PLATE = re.compile(r"^[A-Z0-9][A-Z0-9 -]{0,9}$")
MAX_MILEAGE = 2_000_000


class Vehicle(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the booking keeps. Empty (no year) on bookings made before vehicles were
    structured: those have only the free-text `Booking.vehicle`."""

    year: int | None = None
    make: str = ""
    model: str = ""
    vin: str = ""
    plate: str = ""
    mileage: int | None = None

    def describe(self) -> str:
        """'2018 Honda Civic'."""
        return " ".join(str(p) for p in (self.year, self.make, self.model) if p)

    def details(self) -> list[str]:
        """Lines for a calendar event's description."""
        lines = [f"Vehicle: {self.describe()}"]
        if self.vin:
            lines.append(f"VIN: {self.vin}")
        if self.plate:
            lines.append(f"Plate: {self.plate}")
        if self.mileage is not None:
            lines.append(f"Mileage: {self.mileage:,}")
        return lines


def _describe(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class VehicleParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The tool's `vehicle` argument. Every field may be missing or loosely typed here:
    what is wrong becomes a sentence in `validate_vehicle`, not a decoding error."""

    year: Annotated[int | str, _describe("Model year, four digits, e.g. 2018.")] = ""
    make: Annotated[str, _describe("Manufacturer, e.g. Honda.")] = ""
    model: Annotated[str, _describe("Model, e.g. Civic.")] = ""
    vin: Annotated[str | None, _describe("17-character VIN, only if the caller gives it.")] = None
    plate: Annotated[str | None, _describe("License plate, only if the caller gives it.")] = None
    mileage: Annotated[
        int | str | None, _describe("Odometer miles, only if the caller gives them.")
    ] = None


def validate_vehicle(given: VehicleParams | str, *, this_year: int) -> Vehicle:
    if isinstance(given, str):
        given = _from_text(given)
    year = _year(given.year, this_year)
    make, model = given.make.strip(), given.model.strip()
    if not make or not model:
        missing = " and ".join(w for w, v in (("make", make), ("model", model)) if not v)
        raise ToolError(
            f"I need the vehicle's {missing} as well as its year, e.g. 2018 Honda Civic. "
            "Please ask the caller."
        )
    return Vehicle(
        year=year,
        make=make,
        model=model,
        vin=_vin(given.vin) if given.vin and given.vin.strip() else "",
        plate=_plate(given.plate) if given.plate and given.plate.strip() else "",
        mileage=_mileage(given.mileage) if given.mileage not in (None, "") else None,
    )


def _from_text(text: str) -> VehicleParams:
    """'2018 Honda Civic' (what a model sends when it ignores the structure)."""
    m = re.match(r"^\s*(\d{4})\s+(\S+)\s+(.+?)\s*$", text)
    if m:
        return VehicleParams(year=m[1], make=m[2], model=m[3])
    raise ToolError(
        f"I need the vehicle's year, make and model (e.g. 2018 Honda Civic), not just "
        f"{text.strip()!r}. Please ask the caller."
    )


def _year(value: int | str, this_year: int) -> int:
    text = str(value).strip().lstrip("'")
    if not text:
        raise ToolError("What year is the vehicle? I need its model year, e.g. 2018.")
    if not text.isdigit() or len(text) != 4:
        raise ToolError(
            f"The model year {str(value)!r} should be four digits, e.g. 2018. "
            "Please ask the caller for the year."
        )
    year = int(text)
    if not 1900 <= year <= this_year + 2:
        raise ToolError(
            f"{year} isn't a model year I can book; it should be between 1900 and "
            f"{this_year + 2}. Please check the year with the caller."
        )
    return year


def _vin(value: str) -> str:
    vin = re.sub(r"[\s-]+", "", value).upper()
    if _VIN_LETTERS.match(vin):
        return vin
    if len(vin) != 17:
        why = f"that one has {len(vin)}"
    elif re.search(r"[IOQ]", vin):
        why = "that one has an I, O or Q, which VINs never use (maybe a 1 or a 0?)"
    else:
        why = "that one has other characters"
    raise ToolError(
        f"A VIN is 17 letters and digits without I, O or Q; {why}. Please read it back to "
        "the caller, or leave the VIN out."
    )


def _plate(value: str) -> str:
    plate = " ".join(value.upper().split())
    if not _PLATE.match(plate):
        raise ToolError(
            f"The plate {value!r} should be up to 10 letters and digits. Please check it "
            "with the caller, or leave it out."
        )
    return plate


def _mileage(value: int | str | None) -> int:
    text = str(value).strip().lower().replace(",", "").replace("miles", "").strip()
    factor = 1
    if text.endswith(("k", "thousand")):
        factor, text = 1000, text.removesuffix("thousand").removesuffix("k").strip()
    try:
        miles = round(float(text) * factor)
    except (ValueError, OverflowError):  # words, 'nan', 'inf'
        miles = -1
    if not 0 <= miles <= MAX_MILEAGE:
        raise ToolError(
            f"The mileage {str(value)!r} should be the odometer reading in miles, e.g. 45000. "
            "Please check it with the caller, or leave it out."
        )
    return miles
