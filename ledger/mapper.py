"""Maps signed domain events to stored events whose state is the exact envelope bytes.

The event store holds nothing but the signed envelope for each event: every attribute of a
domain event is derived from its envelope (``domain.signed.SignedEvent.from_envelope``), so
what the projections read is exactly what the signatures and the Merkle leaves cover.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from ledger.sealer import SealedStoredEvent
from ledger.store import idempotency_token


class EnvelopeMapper(Mapper[Any]):
    """Stores ``event.envelope`` verbatim; rebuilds events with ``cls.from_envelope``."""

    def __init__(self, transcoder: Any = None, compressor: Any = None, cipher: Any = None):
        if compressor is not None or cipher is not None:
            raise ValueError("the sealed log stores envelopes verbatim: no compressor or cipher")
        super().__init__(transcoder)

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        envelope = getattr(domain_event, "envelope", None)
        if not isinstance(envelope, bytes):
            raise TypeError(f"{type(domain_event).__qualname__} is not a signed event")
        fact = domain_event.fact  # type: ignore[attr-defined]
        key = fact.idempotency_key
        return SealedStoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=envelope,
            nonce=fact.nonce,
            idem=None if key is None else idempotency_token(fact.actor, key),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        cls = resolve_topic(stored_event.topic)
        event: DomainEventProtocol[Any] = cls.from_envelope(
            stored_event.originator_id,
            stored_event.originator_version,
            stored_event.state,
            stored_event.topic,
        )
        return event
