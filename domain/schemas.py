"""The data schema of every fact type: one frozen pydantic model per type.

A fact's ``data`` object is validated against its model before any rule runs. The models are
strict: unknown fields are refused, strings are never coerced to numbers or back, decimal
numbers travel as JSON strings (``"23.5"``: the canonical form forbids floats), days as
``"2026-03-31"``, instants as ``"2026-04-05T08:00:00Z"``. A failed validation becomes an
``InvalidFact`` naming the field (``data.items[0].group: ...``).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from domain.errors import InvalidFact
from signing.canonical import parse_time
from signing.errors import CanonicalFormError

_DECIMAL = re.compile(r"^-?[0-9]{1,9}(\.[0-9]{1,6})?$")
_SIGNED_DECIMAL = re.compile(r"^[+-]?[0-9]{1,9}(\.[0-9]{1,6})?$")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str) or not _SIGNED_DECIMAL.match(value):
        raise ValueError('a decimal number written as a string, like "23.5" or "-0.5"')
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise ValueError(f"not a decimal number: {value!r}") from None


def _day(value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _DAY.match(value):
        raise ValueError('a day written "YYYY-MM-DD"')
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"no such day: {value!r}") from None


def _instant(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise ValueError('a UTC time written "YYYY-MM-DDTHH:MM:SSZ"')
    try:
        return parse_time(value)
    except CanonicalFormError as exc:
        raise ValueError(str(exc)) from None


Dec = Annotated[Decimal, BeforeValidator(_decimal)]
Day = Annotated[dt.date, BeforeValidator(_day)]
Instant = Annotated[dt.datetime, BeforeValidator(_instant)]
# Identifiers chosen by the writer: unit codes, item ids, appeal ids, ...
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
# Principal names follow the C2SP key-name rules checked by the key ring.
Name = Annotated[str, StringConstraints(pattern=r"^[^\s+]{1,128}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
PERIOD_PATTERN = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2]|Q[1-4])$"  # 2026-03 (a month) or 2026-Q1
Period = Annotated[str, StringConstraints(pattern=PERIOD_PATTERN)]


class FactData(BaseModel):
    """Base of every fact's data model."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RulingFields(FactData):
    """The fields of every ``*.ruling_applied`` fact the ledger derives from an appeal
    decision (``domain/appeals.py``); each module adds the ``target`` its stream needs."""

    appeal: Code
    act: int = Field(ge=0)
    act_nonce: str
    act_type: str
    ruling: Literal["overturned", "exempted"]


M = TypeVar("M", bound=FactData)


def validate(model: type[M], data: dict[str, Any], fact_type: str, actor: str) -> M:
    """Validate ``data`` against ``model`` or raise ``InvalidFact`` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = "data" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]
            )
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise InvalidFact(
            f"{fact_type}: " + "; ".join(problems), fact_type=fact_type, actor=actor
        ) from None


def period_start(period: str) -> dt.date:
    """The first day of ``2026-03`` (a month) or ``2026-Q1`` (a quarter)."""
    year, part = period.split("-")
    if part.startswith("Q"):
        return dt.date(int(year), 3 * int(part[1]) - 2, 1)
    return dt.date(int(year), int(part), 1)


def format_decimal(value: Decimal) -> str:
    """A decimal as the string the facts use (no exponent, no trailing zeros)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text
