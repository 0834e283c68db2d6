"""The five scheduling tools, over any `Store`.

Booking is where double bookings are prevented, the same way on both backends:
1. read the bookings around the slot; if this caller already holds this service at this
   time, that is the answer (a retried or repeated request books nothing new);
2. for each free bay, in the same order in every process, insert the event under the
   deterministic id of (slot start, bay): the store refuses an id that exists (Google's
   409, DuckDB's primary key), so of two calls racing for one bay exactly one gets it;
3. bookings that overlap without sharing a start time have different ids. A store that
   can check the bay atomically with the write does so and refuses (`SlotTaken`: the
   local store, under the database's appointments lock; `checks_bays`), and nothing
   is re-read. Google Calendar has no transactions, so after the insert the winner
   re-reads the bay and yields (deletes its event, tries the next bay) if an
   overlapping booking on it was created first by Google's own clock (`loses_to`);
   on a tie both yield. That is sound only as far as Google's listing shows every event
   created before it was asked and its `created` stamps follow that order, and a process
   that dies between its insert and its re-check leaves its event in place.

Lookups are the caller's own: `find_appointments` reads only the number the call comes
from (never a number the model passes), unless the shop enables
`other_number_lookup = "confirmation_code"`, and then only the one booking whose code the
caller gives. Moving and cancelling stay with the booking number either way.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec

from hookline import ProviderError, Tool, ToolContext, ToolError

from .dates import past_date_error, relative_day
from .notify import Confirmations
from .schedule import (
    Booking,
    Rules,
    available_slots,
    bookable_range,
    candidate_starts,
    event_id,
    free_bays,
    loses_to,
    normalize_phone,
    overlaps,
    parse_when,
    spoken,
)
from .services import ServiceMatcher
from .store import SlotTaken, Store, call_logger, current_logger
from .vehicle import Vehicle, VehicleParams, validate_vehicle

__all__ = ["UNREACHABLE", "Scheduler", "build_tools"]


UNREACHABLE = (
    "I can't reach the schedule right now; can I take your number and have someone call you back?"
)
# What a caller hears when asking about a number that is not theirs: no one's data.
OWN_NUMBER_ONLY = "I can only look up appointments for the number you're calling from"
NO_CALLER_ID = (
    "I can't see the number you're calling from, so I can't look up appointments by phone number"
)
OTHER_NUMBER = (
    ". If the appointment is under another number, please call from that number, or I "
    "can have someone from the shop call you back."
)
CODE_HINT = (
    ", unless you tell me the number it's under and the appointment's confirmation code "
    "(the six digits given when it was booked). Otherwise I can have someone from the "
    "shop call you back."
)
SMS_OK = (
    "Whether the caller wants a text message confirming this: ask them; false when they "
    "decline (then none is sent)."
)
EMAIL = "The caller's email address, only if they want a calendar invitation and spell it out."
MAX_CODE_MISSES = 5  # wrong confirmation codes per looked-up number...
CODE_MISS_WINDOW = dt.timedelta(hours=1)  # ...within this long, then code lookups stop
MAX_GENERATIONS = 16  # ids of cancelled events stay taken; move past that many per bay
SCAN_DAYS = 7  # availability is searched a week of events at a time
EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# ------------------------------------------------------------------ results


class Slot(msgspec.Struct):
    start: str  # ISO 8601 in the shop's time zone
    spoken: str


class Availability(msgspec.Struct):
    service: str
    minutes: int
    slots: list[Slot]
    message: str


class Appointment(msgspec.Struct, omit_defaults=True):
    appointment_id: str
    service: str
    start: str
    end: str
    spoken: str
    customer_name: str
    vehicle: str
    phone: str
    confirmation_code: str = ""  # only when the shop allows lookups by code
    vehicle_details: Vehicle | None = None  # year, make, model (VIN, plate, mileage if given)


class BookingResult(msgspec.Struct):
    booked: bool
    appointment: Appointment
    message: str
    already_booked: bool = False


class Appointments(msgspec.Struct):
    phone: str
    appointments: list[Appointment]
    message: str


class CancelResult(msgspec.Struct):
    cancelled: bool
    appointment_id: str
    message: str


def _params(services: Sequence[str], lookup_by_code: bool) -> dict[str, type[msgspec.Struct]]:
    """Parameter Structs.

    `service` is a string whose schema lists the shop's services as an enum: the model is
    shown exactly what to send (and a strict-mode API would hold it to that), while
    decoding takes any wording, which `ServiceMatcher` resolves ("Oil Change", "an oil
    change", a synonym) or answers with a sentence listing the services. A Literal type
    would put msgspec's `Invalid enum value ... - at $.service` in front of the model
    instead, before the tool could help."""
    service_type: Any = Annotated[
        str,
        msgspec.Meta(
            description="The service, one of the shop's services.",
            extra_json_schema={"enum": sorted(services)},
        ),
    ]
    when = "Local shop time as YYYY-MM-DDTHH:MM, or a date YYYY-MM-DD for that whole day."
    day_words = " 'today', 'tomorrow' or a weekday ('next tuesday') also work."

    def field(description: str) -> Any:
        return msgspec.Meta(description=description)

    check = msgspec.defstruct(
        "CheckAvailability",
        [
            ("service", service_type),
            (
                "earliest",
                Annotated[str | None, field("Earliest start wanted. " + when + day_words)],
                None,
            ),
            (
                "latest",
                Annotated[str | None, field("Latest start wanted. " + when + day_words)],
                None,
            ),
        ],
        kw_only=True,
    )
    book = msgspec.defstruct(
        "BookAppointment",
        [
            ("service", service_type),
            ("start", Annotated[str, field("Start time from check_availability. " + when)]),
            ("customer_name", Annotated[str, field("The customer's name.")]),
            (
                "vehicle",
                Annotated[
                    VehicleParams | str,
                    field(
                        "The customer's vehicle: year, make and model; VIN, plate and "
                        "mileage only if the caller gives them."
                    ),
                ],
            ),
            (
                "phone",
                Annotated[
                    str | None,
                    field(
                        "Contact number; leave out to use the number the caller is calling from."
                    ),
                ],
                None,
            ),
            ("notes", Annotated[str, field("Anything the technician should know.")], ""),
            ("email", Annotated[str | None, field(EMAIL)], None),
            ("sms_ok", Annotated[bool | None, field(SMS_OK)], None),
        ],
        kw_only=True,
    )
    find_fields: list[Any] = [
        (
            "phone",
            Annotated[
                str | None,
                field(
                    "Leave out: the caller's own number is looked up. Another number only "
                    + ("with its confirmation_code." if lookup_by_code else "gets a refusal.")
                ),
            ],
            None,
        )
    ]
    if lookup_by_code:
        find_fields.append(
            (
                "confirmation_code",
                Annotated[
                    str | None,
                    field("The six-digit code the customer got when booking, for another number."),
                ],
                None,
            )
        )
    find = msgspec.defstruct("FindAppointments", find_fields, kw_only=True)
    appointment_id = Annotated[str, field("The appointment_id from find_appointments.")]
    reschedule = msgspec.defstruct(
        "RescheduleAppointment",
        [
            ("appointment_id", appointment_id),
            ("new_start", Annotated[str, field("New start time. " + when)]),
            ("sms_ok", Annotated[bool | None, field(SMS_OK)], None),
        ],
        kw_only=True,
    )
    cancel = msgspec.defstruct(
        "CancelAppointment",
        [
            ("appointment_id", appointment_id),
            ("sms_ok", Annotated[bool | None, field(SMS_OK)], None),
        ],
        kw_only=True,
    )
    return {
        "check": check,
        "book": book,
        "find": find,
        "reschedule": reschedule,
        "cancel": cancel,
    }


# ------------------------------------------------------------------ the scheduler


class Scheduler:
    """The tools' logic, over a store and the shop's rules."""

    def __init__(
        self,
        rules: Rules,
        store: Store,
        *,
        calendar_id: str,
        max_slots: int = 5,
        spacing: dt.timedelta = dt.timedelta(hours=1),
        clock: Callable[[], dt.datetime] | None = None,
        lookup_by_code: bool = False,
        confirmations: Confirmations | None = None,
    ) -> None:
        self.rules = rules
        self.confirmations = confirmations  # texts to the caller (None: none are sent)
        self.services = ServiceMatcher(list(rules.services), rules.synonyms)
        self.lookup_by_code = lookup_by_code
        self._code_misses = _Misses(MAX_CODE_MISSES, CODE_MISS_WINDOW)
        self.store = store
        self.calendar_id = calendar_id
        self.max_slots = max_slots
        self.spacing = spacing
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    # -------------------------------------------------------------- helpers

    def _service(self, text: str) -> str:
        return self.services.match(text)

    def _when(self, text: str, *, end_of_day: bool = False, days: bool = False) -> dt.datetime:
        """An instant from the model's text: ISO or, for a range (`days`), also a
        caller's day word ("tomorrow", "next tuesday") resolved against today in the
        shop's time zone. A day before today is refused with a sentence naming today,
        never silently moved."""
        today = self.clock().astimezone(self.rules.tz).date()
        day = relative_day(text, today) if days else None
        try:
            value = parse_when(
                day.isoformat() if day else text, self.rules.tz, end_of_day=end_of_day
            )
        except ValueError:
            raise ToolError(
                f"I couldn't read the time {text!r}; use a date like {today.isoformat()} "
                f"or a date and time like {today.isoformat()}T09:30 (today is {today:%A})."
            ) from None
        local = value.astimezone(self.rules.tz)
        asked = (local - dt.timedelta(microseconds=1)).date() if end_of_day else local.date()
        if asked < today:
            raise ToolError(past_date_error(text, asked, today))
        return value

    def _iso(self, instant: dt.datetime) -> str:
        return instant.astimezone(self.rules.tz).isoformat(timespec="minutes")

    def _slot(self, start: dt.datetime, now: dt.datetime) -> Slot:
        return Slot(start=self._iso(start), spoken=spoken(start, self.rules.tz, now))

    def _appointment(self, b: Booking, now: dt.datetime) -> Appointment:
        return Appointment(
            appointment_id=b.id,
            service=b.service,
            start=self._iso(b.start),
            end=self._iso(b.end),
            spoken=spoken(b.start, self.rules.tz, now),
            customer_name=b.customer_name,
            vehicle=b.vehicle,
            phone=b.phone,
            confirmation_code=b.confirmation_code if self.lookup_by_code else "",
            vehicle_details=b.vehicle_info if b.vehicle_info.year else None,
        )

    async def _find_slots(
        self, minutes: int, lo: dt.datetime, hi: dt.datetime, limit: int
    ) -> list[tuple[dt.datetime, dt.datetime]]:
        """Free (start, end) in [lo, hi], reading the store a week at a time."""
        found: list[tuple[dt.datetime, dt.datetime]] = []
        chunk_lo = lo
        length = dt.timedelta(minutes=minutes)
        while chunk_lo <= hi and len(found) < limit:
            chunk_hi = min(hi, chunk_lo + dt.timedelta(days=SCAN_DAYS))
            if found:
                chunk_lo = max(chunk_lo, found[-1][0] + self.spacing)
            if next(candidate_starts(self.rules, minutes, chunk_lo, chunk_hi), None) is not None:
                bookings = await self.store.bookings(chunk_lo, chunk_hi + length)
                found += available_slots(
                    self.rules,
                    bookings,
                    minutes,
                    chunk_lo,
                    chunk_hi,
                    limit - len(found),
                    self.spacing,
                )
            chunk_lo = chunk_hi + dt.timedelta(microseconds=1)
        return found

    async def _alternatives(self, minutes: int, around: dt.datetime, now: dt.datetime) -> str:
        earliest, latest = bookable_range(self.rules, now)
        slots = await self._find_slots(
            minutes, max(earliest, around), latest - dt.timedelta(microseconds=1), 3
        )
        if not slots:
            return "There are no openings for that in the booking window."
        return (
            "The nearest openings are "
            + "; ".join(spoken(s, self.rules.tz, now) for s, _ in slots)
            + "."
        )

    def _caller(self, ctx: ToolContext) -> str:
        return normalize_phone(ctx.call.from_number)

    # -------------------------------------------------------------- tools

    async def check_availability(
        self, service: str, earliest: str | None, latest: str | None
    ) -> Availability:
        name = self._service(service)
        minutes = self.rules.services[name]
        now = self.clock()
        allowed_lo, allowed_hi = bookable_range(self.rules, now)
        allowed_hi -= dt.timedelta(microseconds=1)
        lo = max(self._when(earliest, days=True) if earliest else now, allowed_lo)
        hi = min(
            self._when(latest, end_of_day=True, days=True) if latest else allowed_hi, allowed_hi
        )
        if lo > allowed_hi:
            raise ToolError(
                f"We only book up to {self.rules.max_days_ahead} days ahead; "
                "please pick an earlier date."
            )
        slots = await self._find_slots(minutes, lo, hi, self.max_slots) if lo <= hi else []
        if slots:
            message = (
                f"Openings for {name} ({minutes} minutes): "
                + "; ".join(spoken(s, self.rules.tz, now) for s, _ in slots)
                + "."
            )
        else:
            slots = await self._find_slots(minutes, max(lo, hi), allowed_hi, self.max_slots)
            if slots:
                message = (
                    f"Nothing is open for {name} in that window. The next openings are "
                    + "; ".join(spoken(s, self.rules.tz, now) for s, _ in slots)
                    + "."
                )
            else:
                message = (
                    f"There are no openings for {name} in the next "
                    f"{self.rules.max_days_ahead} days."
                )
        return Availability(
            service=name,
            minutes=minutes,
            slots=[self._slot(s, now) for s, _ in slots],
            message=message,
        )

    async def _check_bookable(self, minutes: int, start: dt.datetime, now: dt.datetime) -> None:
        earliest, latest = bookable_range(self.rules, now)
        fits = next(candidate_starts(self.rules, minutes, start, start), None)
        if start >= earliest and start < latest and fits is not None and fits[0] == start:
            return
        day = start.astimezone(self.rules.tz).date()
        if start < earliest:
            why = "That's too soon to book"
        elif start >= latest:
            why = f"We only book up to {self.rules.max_days_ahead} days ahead"
        elif day in self.rules.closures or not self.rules.hours.get(day.weekday()):
            why = "We're closed that day"
        else:
            why = f"A {minutes}-minute job can't start at that time"
        raise ToolError(f"{why}. {await self._alternatives(minutes, start, now)}")

    async def _reserve(self, booking: Booking, ignore: str = "") -> tuple[Booking, bool]:
        """Take a bay for `booking` (start/end/service/phone set). Returns the stored
        booking and whether it already existed. Raises _NoBay when no bay is free."""
        start, end = booking.start, booking.end
        existing = [b for b in await self.store.bookings(start, end) if b.id != ignore]
        for b in existing:
            if _same(b, booking):
                return b, True
        bays = free_bays(existing, start, end, self.rules.bays)
        for bay in bays:
            for generation in range(MAX_GENERATIONS):
                candidate = msgspec.structs.replace(
                    booking, id=event_id(self.calendar_id, start, bay, generation), bay=bay
                )
                try:
                    stored = await self.store.insert(candidate)
                except SlotTaken:
                    current_logger().info("bay %d was taken since we looked", bay)
                    break
                if stored is None:
                    holder = await self.store.get(candidate.id)
                    if holder is None or holder.cancelled:
                        continue  # a cancelled booking keeps its id: next generation
                    if _same(holder, booking):
                        return holder, True  # our own insert, answered before a retry
                    break  # someone else holds this bay at this time
                if self.store.checks_bays:
                    return stored, False  # checked with the write: nothing to re-read
                rivals = [
                    b
                    for b in await self.store.bookings(start, end)
                    if b.bay == bay and b.id not in (stored.id, ignore) and overlaps(b, start, end)
                ]
                if any(loses_to(stored, b) for b in rivals):
                    current_logger().info(
                        "booking %s overlaps an earlier one on bay %d; yielding", stored.id, bay
                    )
                    await self.store.cancel(stored.id)
                    break
                return stored, False
        raise _NoBay(raced=bool(bays))

    async def book_appointment(
        self,
        ctx: ToolContext,
        *,
        service: str,
        start: str,
        customer_name: str,
        vehicle: VehicleParams | str,
        phone: str | None,
        notes: str,
        email: str | None = None,
        sms_ok: bool | None = None,
    ) -> BookingResult:
        name = self._service(service)
        minutes = self.rules.services[name]
        begin = self._when(start)
        now = self.clock()
        car = validate_vehicle(vehicle, this_year=now.astimezone(self.rules.tz).year)
        number = normalize_phone(phone or "") or self._caller(ctx)
        if not number:
            raise ToolError("I need a phone number for the appointment. What's the best number?")
        address = (email or "").strip()
        if address and not EMAIL_SHAPE.match(address):
            raise ToolError(f"{address!r} doesn't look like an email address; could you spell it?")
        await self._check_bookable(minutes, begin, now)
        wanted = Booking(
            id="",
            start=begin,
            end=begin + dt.timedelta(minutes=minutes),
            service=name,
            phone=number,
            customer_name=customer_name.strip(),
            vehicle=car.describe(),
            vehicle_info=car,
            notes=notes.strip(),
            call_id=ctx.call.call_id,
            request_id=ctx.tool_call_id,
            confirmation_code=f"{secrets.randbelow(10**6):06d}",
            email=address,
        )
        try:
            stored, existed = await self._reserve(wanted)
        except _NoBay as e:
            raise ToolError(
                f"Sorry, {spoken(begin, self.rules.tz, now)} is already taken"
                + ("; another caller just booked it. " if e.raced else ". ")
                + await self._alternatives(minutes, begin, now)
            ) from None
        ctx.logger.info(
            "appointment %s %s at %s", "found" if existed else "booked", stored.id, stored.start
        )
        await self._confirm(ctx, "booked", stored, sms_ok)
        when = spoken(stored.start, self.rules.tz, now)
        return BookingResult(
            booked=True,
            already_booked=existed,
            appointment=self._appointment(stored, now),
            message=(
                f"{'That appointment was already booked' if existed else 'Booked'}: "
                f"{name} for {stored.customer_name or 'the customer'} on {when}."
                + self._code_note(stored)
            ),
        )

    async def _confirm(
        self, ctx: ToolContext, event: str, booking: Booking, sms_ok: bool | None
    ) -> None:
        """Queue the confirmation text unless the caller declined it (`sms_ok` false)."""
        if self.confirmations is None:
            return
        if sms_ok is False:
            ctx.logger.info("no %s text for %s: the caller declined", event, booking.id)
            return
        await self.confirmations.send(ctx, event, booking)

    def _code_note(self, booking: Booking) -> str:
        if not (self.lookup_by_code and booking.confirmation_code):
            return ""
        return f" Confirmation code {' '.join(booking.confirmation_code)}."

    async def find_appointments(
        self, ctx: ToolContext, phone: str | None, confirmation_code: str | None = None
    ) -> Appointments:
        caller = self._caller(ctx)
        number = normalize_phone(phone or "") or caller
        now = self.clock()
        if number and number == caller:
            found = [b for b in await self.store.by_phone(number, now) if b.service]
        elif self.lookup_by_code and number and confirmation_code:
            found = await self._by_code(ctx, number, confirmation_code, now)
        else:
            ctx.logger.info("refused a lookup of a number other than the caller's")
            raise ToolError(
                (OWN_NUMBER_ONLY if caller else NO_CALLER_ID)
                + (CODE_HINT if self.lookup_by_code else OTHER_NUMBER)
            )
        appointments = [self._appointment(b, now) for b in found]
        if appointments:
            message = (
                "Upcoming appointments: "
                + "; ".join(f"{a.service} on {a.spoken}" for a in appointments)
                + "."
            )
        else:
            message = "I don't see any upcoming appointments under that number."
        return Appointments(phone=number, appointments=appointments, message=message)

    async def _by_code(
        self, ctx: ToolContext, number: str, code: str, now: dt.datetime
    ) -> list[Booking]:
        """The one upcoming booking under `number` with this confirmation code. Wrong
        codes are counted per number, so guessing one is bounded."""
        if self._code_misses.blocked(number, now):
            raise ToolError(
                "There have been too many wrong confirmation codes for that number. "
                "I can have someone from the shop call you back."
            )
        given = re.sub(r"\D", "", code).encode()
        found = [
            b
            for b in await self.store.by_phone(number, now)
            if b.service
            and b.confirmation_code
            and hmac.compare_digest(b.confirmation_code.encode(), given)
        ]
        if not found:
            self._code_misses.add(number, now)
            ctx.logger.info("a confirmation code did not match")
            raise ToolError(
                "That confirmation code doesn't match an upcoming appointment under that "
                "number. Please check the six digits."
            )
        ctx.logger.info("looked up appointment %s by its confirmation code", found[0].id)
        return found

    async def _owned(self, ctx: ToolContext, appointment_id: str, verb: str) -> Booking:
        booking = await self.store.get(appointment_id.strip())
        if booking is None or not booking.service:
            raise ToolError(
                "I couldn't find that appointment. Let me look up your appointments first."
            )
        caller = self._caller(ctx)
        if not caller or booking.phone != caller:
            raise ToolError(
                f"I can only {verb} an appointment from the phone number it was booked "
                "under, and that isn't the number you're calling from. I can have someone "
                "from the shop call you about it."
            )
        return booking

    async def reschedule_appointment(
        self, ctx: ToolContext, appointment_id: str, new_start: str, sms_ok: bool | None = None
    ) -> BookingResult:
        old = await self._owned(ctx, appointment_id, "move")
        now = self.clock()
        if old.cancelled:
            moved = [b for b in await self.store.by_phone(old.phone, now) if b.replaces == old.id]
            if moved:  # a retry of a reschedule that already went through
                appointment = self._appointment(moved[0], now)
                return BookingResult(
                    booked=True,
                    already_booked=True,
                    appointment=appointment,
                    message=f"That appointment was already moved to {appointment.spoken}.",
                )
            raise ToolError("That appointment was cancelled, so there is nothing to move.")
        minutes = self.rules.services.get(old.service) or int(
            (old.end - old.start).total_seconds() // 60
        )
        begin = self._when(new_start)
        if begin == old.start:
            return BookingResult(
                booked=True,
                already_booked=True,
                appointment=self._appointment(old, now),
                message=f"The appointment is already at {spoken(begin, self.rules.tz, now)}.",
            )
        await self._check_bookable(minutes, begin, now)
        wanted = msgspec.structs.replace(
            old,
            id="",
            start=begin,
            end=begin + dt.timedelta(minutes=minutes),
            bay=None,
            call_id=ctx.call.call_id,
            request_id=ctx.tool_call_id,
            replaces=old.id,
            status="confirmed",
            created=None,
        )
        try:
            # The old booking does not stand in its own way (moving by half an hour).
            stored, existed = await self._reserve(wanted, ignore=old.id)
        except _NoBay as e:
            raise ToolError(
                f"Sorry, {spoken(begin, self.rules.tz, now)} isn't available"
                + ("; another caller just booked it. " if e.raced else ". ")
                + await self._alternatives(minutes, begin, now)
            ) from None
        await self.store.cancel(old.id)
        ctx.logger.info("appointment %s moved to %s (%s)", old.id, stored.id, stored.start)
        await self._confirm(ctx, "rescheduled", stored, sms_ok)
        when = spoken(stored.start, self.rules.tz, now)
        return BookingResult(
            booked=True,
            already_booked=existed,
            appointment=self._appointment(stored, now),
            message=f"Moved: {stored.service} is now on {when}. "
            "It has a new appointment id; the old one is cancelled.",
        )

    async def cancel_appointment(
        self, ctx: ToolContext, appointment_id: str, sms_ok: bool | None = None
    ) -> CancelResult:
        booking = await self._owned(ctx, appointment_id, "cancel")
        now = self.clock()
        when = spoken(booking.start, self.rules.tz, now)
        if not booking.cancelled:
            await self.store.cancel(booking.id)
            ctx.logger.info("appointment %s cancelled", booking.id)
            await self._confirm(ctx, "cancelled", booking, sms_ok)
            return CancelResult(
                cancelled=True,
                appointment_id=booking.id,
                message=f"Cancelled the {booking.service} on {when}.",
            )
        return CancelResult(
            cancelled=True,
            appointment_id=booking.id,
            message=f"The {booking.service} on {when} was already cancelled.",
        )


class _NoBay(Exception):
    """Every bay is taken at that time (the tool words it, with alternatives). `raced`:
    a bay looked free, and another booking took it first."""

    def __init__(self, raced: bool) -> None:
        super().__init__("no bay")
        self.raced = raced


class _Misses:
    """Wrong confirmation codes per looked-up number: after `limit` within `window`,
    code lookups of that number stop until the window has passed. Bounded: the
    longest-idle numbers are forgotten first."""

    def __init__(self, limit: int, window: dt.timedelta, capacity: int = 10_000) -> None:
        self.limit, self.window, self.capacity = limit, window, capacity
        self._times: OrderedDict[str, list[dt.datetime]] = OrderedDict()

    def _recent(self, number: str, now: dt.datetime) -> list[dt.datetime]:
        return [t for t in self._times.get(number, ()) if now - t < self.window]

    def blocked(self, number: str, now: dt.datetime) -> bool:
        return len(self._recent(number, now)) >= self.limit

    def add(self, number: str, now: dt.datetime) -> None:
        self._times[number] = [*self._recent(number, now), now]
        self._times.move_to_end(number)
        while len(self._times) > self.capacity:
            self._times.popitem(last=False)


def _same(a: Booking, b: Booking) -> bool:
    """The same appointment asked for again: same number, service and start."""
    return a.phone == b.phone and a.service == b.service and a.start == b.start and not a.cancelled


# ------------------------------------------------------------------ the tools


def _voiced(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Store failures become a sentence the agent can say; the details go to the log."""

    async def handler(params: Any, ctx: ToolContext) -> Any:
        call_logger.set(ctx.logger)  # this task's context only
        try:
            return await fn(params, ctx)
        except ProviderError as e:
            ctx.logger.warning("calendar unavailable: %s", e)
            raise ToolError(UNREACHABLE) from e

    handler.__name__ = fn.__name__
    return handler


def build_tools(scheduler: Scheduler) -> list[Tool]:
    p = _params(list(scheduler.rules.services), scheduler.lookup_by_code)
    s = scheduler

    @_voiced
    async def check(params: Any, ctx: ToolContext) -> Availability:
        return await s.check_availability(params.service, params.earliest, params.latest)

    @_voiced
    async def book(params: Any, ctx: ToolContext) -> BookingResult:
        return await s.book_appointment(
            ctx,
            service=params.service,
            start=params.start,
            customer_name=params.customer_name,
            vehicle=params.vehicle,
            phone=params.phone,
            notes=params.notes,
            email=params.email,
            sms_ok=params.sms_ok,
        )

    @_voiced
    async def find(params: Any, ctx: ToolContext) -> Appointments:
        return await s.find_appointments(
            ctx, params.phone, getattr(params, "confirmation_code", None)
        )

    @_voiced
    async def reschedule(params: Any, ctx: ToolContext) -> BookingResult:
        return await s.reschedule_appointment(
            ctx, params.appointment_id, params.new_start, params.sms_ok
        )

    @_voiced
    async def cancel(params: Any, ctx: ToolContext) -> CancelResult:
        return await s.cancel_appointment(ctx, params.appointment_id, params.sms_ok)

    return [
        Tool(
            "check_availability",
            "Find the next free start times for a service, in the shop's local time. "
            "Offer the caller a few of them.",
            p["check"],
            check,
        ),
        Tool(
            "book_appointment",
            "Book a service appointment at a start time check_availability offered. "
            "Confirm the time, name and vehicle with the caller first.",
            p["book"],
            book,
            side_effect=True,
        ),
        Tool(
            "find_appointments",
            "List the upcoming appointments booked under the number the caller is calling from"
            + (
                " (or, with its confirmation code, one booked under another number)."
                if s.lookup_by_code
                else "."
            ),
            p["find"],
            find,
        ),
        Tool(
            "reschedule_appointment",
            "Move the caller's appointment to a new start time (checks it is free first). "
            "The appointment gets a new appointment_id.",
            p["reschedule"],
            reschedule,
            side_effect=True,
        ),
        Tool(
            "cancel_appointment",
            "Cancel an appointment booked under the number the caller is calling from.",
            p["cancel"],
            cancel,
            side_effect=True,
        ),
    ]
