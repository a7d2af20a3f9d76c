"""Published rules: policies (rule packs) and work-item catalogues, versioned and effective-dated.

``policy.published`` ``{scope, document}``
    ``document`` is a rule pack (``domain/policy.py`` validates it; ``docs/policies.md``
    describes it). The policy that applies to a unit on a day is the newest version in force
    on that day among the policies published for the nearest unit above it (itself included)
    that has any. By an administrator or an HR officer covering ``scope``.
``catalogue.published`` ``{agency, version, effective_from, items}``
    The agency's work-item catalogue (danh mục đầu mục công việc): each item has a code, a
    name, a group (A leadership, B shared professional, C specialised, D other), its standard
    conversion (``products`` and/or ``hours`` per item) and the positions it applies to (all
    when empty). By an HR officer covering the agency.

Both are versioned 1, 2, 3... without gaps, and a version may not take effect before the day
it is published: catalogues change, history does not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from domain.context import Context, Handler, Recording
from domain.errors import POLICY_INVALID, RETROACTIVE, VERSION_ORDER, WRONG_STATE
from domain.organisation import Position
from domain.policy import Policy, PolicyError, effective_policy, parse_policy
from domain.schemas import Code, Day, Dec, FactData, Text
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id

POLICY_PUBLISHED = "policy.published"
CATALOGUE_PUBLISHED = "catalogue.published"


class PolicyPublishedData(FactData):
    scope: Code
    document: dict[str, Any]


class CatalogueItemData(FactData):
    code: Code
    name: Text
    group: Literal["A", "B", "C", "D"]
    products: Dec | None = None
    hours: Dec | None = None
    positions: list[Code] = Field(default_factory=list, max_length=200)


class CataloguePublishedData(FactData):
    agency: Code
    version: int = Field(ge=1)
    effective_from: Day
    items: list[CatalogueItemData] = Field(min_length=1, max_length=2000)


class PolicyBook(SignedAggregate):
    """Every policy version published for one scope unit, in publication order."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({POLICY_PUBLISHED})

    class FirstPublished(SignedCreated):
        def apply(self, aggregate: PolicyBook) -> None:
            aggregate.scope = self.data["scope"]
            aggregate.add(self.data["document"])

    class Published(SignedEvent):
        def apply(self, aggregate: PolicyBook) -> None:
            aggregate.add(self.data["document"])

    def __init__(self) -> None:
        self.scope = ""
        self.versions: list[Policy] = []

    def add(self, document: dict[str, Any]) -> None:
        self.versions.append(parse_policy(document))

    def latest_version(self, policy_id: str) -> int:
        return max((p.version for p in self.versions if p.id == policy_id), default=0)

    def in_force(self, day: dt.date) -> Policy | None:
        """The version in force on ``day`` (``domain.policy.effective_policy``)."""
        return effective_policy(self.versions, day)

    @staticmethod
    def id_for(scope: str) -> UUID:
        return stream_id("policies", scope)


@dataclass(frozen=True)
class CatalogueItem:
    code: str
    name: str
    group: str
    products: Decimal | None
    hours: Decimal | None
    positions: frozenset[str]
    version: int

    def applies_to(self, position: str) -> bool:
        return not self.positions or position in self.positions


@dataclass(frozen=True)
class CatalogueVersion:
    version: int
    effective_from: dt.date
    items: dict[str, CatalogueItem]


class Catalogue(SignedAggregate):
    """One agency's catalogue, every version kept."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({CATALOGUE_PUBLISHED})

    class FirstPublished(SignedCreated):
        def apply(self, aggregate: Catalogue) -> None:
            aggregate.agency = self.data["agency"]
            aggregate.add(self.data)

    class Published(SignedEvent):
        def apply(self, aggregate: Catalogue) -> None:
            aggregate.add(self.data)

    def __init__(self) -> None:
        self.agency = ""
        self.versions: list[CatalogueVersion] = []

    def add(self, data: dict[str, Any]) -> None:
        version = int(data["version"])
        items = {
            i["code"]: CatalogueItem(
                code=i["code"],
                name=i["name"],
                group=i["group"],
                products=Decimal(i["products"]) if i.get("products") is not None else None,
                hours=Decimal(i["hours"]) if i.get("hours") is not None else None,
                positions=frozenset(i.get("positions", ())),
                version=version,
            )
            for i in data["items"]
        }
        self.versions.append(
            CatalogueVersion(version, dt.date.fromisoformat(data["effective_from"]), items)
        )

    def version_on(self, day: dt.date) -> CatalogueVersion | None:
        best: CatalogueVersion | None = None
        for version in self.versions:
            if version.effective_from <= day and (
                best is None or version.effective_from >= best.effective_from
            ):
                best = version
        return best

    @staticmethod
    def id_for(agency: str) -> UUID:
        return stream_id("catalogue", agency)


def _not_retroactive(ctx: Context, effective_from: dt.date) -> None:
    published_on = ctx.time.date()
    if effective_from < published_on:
        ctx.refuse(
            RETROACTIVE,
            f"effective_from {effective_from} is before the day of publication {published_on}:"
            " a published version may not change the past",
        )


def publish_policy(ctx: Context, data: PolicyPublishedData) -> Recording:
    ctx.unit(data.scope)
    if not ctx.admin:
        ctx.require_role("hr", data.scope)
    try:
        policy = parse_policy(data.document)
    except PolicyError as exc:
        ctx.refuse(POLICY_INVALID, f"data.{exc}")
    _not_retroactive(ctx, policy.effective_from)
    book = ctx.get(PolicyBook, PolicyBook.id_for(data.scope))
    latest = book.latest_version(policy.id) if book is not None else 0
    if policy.version != latest + 1:
        ctx.refuse(
            VERSION_ORDER,
            f"policy {policy.id!r} version {policy.version} must be {latest + 1}",
        )
    if book is None:
        return ctx.start(PolicyBook, PolicyBook.id_for(data.scope), PolicyBook.FirstPublished)
    return ctx.append(book, PolicyBook.Published)


def publish_catalogue(ctx: Context, data: CataloguePublishedData) -> Recording:
    unit = ctx.unit(data.agency)
    if unit.kind != "agency":
        ctx.refuse(WRONG_STATE, f"unit {data.agency!r} is a {unit.kind}, not an agency")
    ctx.require_role("hr", data.agency)
    _not_retroactive(ctx, data.effective_from)
    seen: set[str] = set()
    for item in data.items:
        if item.code in seen:
            ctx.refuse(WRONG_STATE, f"item {item.code!r} appears twice")
        seen.add(item.code)
        if item.products is None and item.hours is None:
            ctx.refuse(WRONG_STATE, f"item {item.code!r} has no standard products or hours")
        for amount in (item.products, item.hours):
            if amount is not None and amount <= 0:
                ctx.refuse(WRONG_STATE, f"item {item.code!r}: standard amounts must be > 0")
        for position in item.positions:
            ctx.require(Position, Position.id_for(position), f"position {position!r}")
    catalogue = ctx.get(Catalogue, Catalogue.id_for(data.agency))
    latest = catalogue.versions[-1].version if catalogue is not None else 0
    if data.version != latest + 1:
        ctx.refuse(VERSION_ORDER, f"catalogue version {data.version} must be {latest + 1}")
    if catalogue is None:
        return ctx.start(Catalogue, Catalogue.id_for(data.agency), Catalogue.FirstPublished)
    return ctx.append(catalogue, Catalogue.Published)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    POLICY_PUBLISHED: (PolicyPublishedData, publish_policy),
    CATALOGUE_PUBLISHED: (CataloguePublishedData, publish_catalogue),
}
