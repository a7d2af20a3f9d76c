"""Signed events: aggregate events whose only state is the signed envelope they came from.

Every event of every aggregate in ``domain/`` derives from ``SignedEvent`` (or
``SignedCreated`` for the first event of a stream). The event's attributes are read from the
envelope's payload; its ``timestamp`` is the time the actor claims. Rebuilding an event from
the store (``from_envelope``) therefore reproduces it exactly, from bytes the log has sealed.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from signing.facts import Fact, read_fact

NAMESPACE = uuid.UUID("6f9d5a7e-3c11-4c59-9a0e-8f2b7d0e4c21")


A = TypeVar("A", bound="SignedAggregate")


@functools.lru_cache(maxsize=65536)
def stream_id(kind: str, key: str) -> UUID:
    """A deterministic aggregate id, e.g. ``stream_id("principal", "lan.nguyen")``."""
    return uuid.uuid5(NAMESPACE, f"{kind}/{key}")


def _as_uuid(originator_id: Any) -> UUID:
    return originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))


class SignedEvent(Aggregate.Event):
    """An aggregate event carrying the exact bytes of the envelope that caused it.

    ``fact`` is that envelope parsed; it is never stored (the mapper stores ``envelope``
    only) and is rebuilt from the envelope when the event is read back.
    """

    envelope: bytes
    fact: Fact

    @property
    def data(self) -> dict[str, Any]:
        return self.fact.data

    @property
    def actor(self) -> str:
        return self.fact.actor

    @classmethod
    def from_envelope(
        cls, originator_id: Any, originator_version: int, envelope: bytes, topic: str
    ) -> SignedEvent:
        fact = read_fact(envelope, strict=False)
        event = object.__new__(cls)
        state: dict[str, Any] = {
            "originator_id": _as_uuid(originator_id),
            "originator_version": originator_version,
            "timestamp": fact.claimed_at,
            "envelope": bytes(envelope),
            "fact": fact,
        }
        cls._complete_state(state, topic)
        object.__setattr__(event, "__dict__", state)
        return event

    @classmethod
    def _complete_state(cls, state: dict[str, Any], topic: str) -> None:
        """Hook for subclasses that need more derived state."""


class SignedCreated(Aggregate.Created, SignedEvent):
    """The first event of a stream; the aggregate class is the event's enclosing class."""

    @classmethod
    def _complete_state(cls, state: dict[str, Any], topic: str) -> None:
        state["originator_topic"] = topic.rsplit(".", 1)[0]


class SignedAggregate(Aggregate):
    """Base aggregate: every state change is a signed event caused by one fact."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _start(cls: type[A], event_class: type[SignedCreated], aggregate_id: UUID, fact: Fact) -> A:
        """Create the aggregate from the fact that starts its stream."""
        return cls._create(
            event_class,
            id=aggregate_id,
            envelope=fact.envelope_bytes,
            fact=fact,
            timestamp=fact.claimed_at,
        )

    def _record(self, event_class: type[SignedEvent], fact: Fact) -> None:
        """Append the event a fact causes."""
        self.trigger_event(
            event_class, envelope=fact.envelope_bytes, fact=fact, timestamp=fact.claimed_at
        )
