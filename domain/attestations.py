"""Document attestations: an actor states, signed, that a document with this SHA-256 exists.

``document.attested`` ``{"sha256": "<64 hex>", "title": "...", "media_type": "..."}`` — the
evidence a declaration or an inspection finding can cite later by its log position.
"""

from __future__ import annotations

import re
from typing import ClassVar
from uuid import UUID

from domain.signed import SignedAggregate, SignedCreated, stream_id
from signing.facts import Fact

DOCUMENT_ATTESTED = "document.attested"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class InvalidAttestation(ValueError):
    """A document attestation's data breaks its schema."""


class Attestation(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({DOCUMENT_ATTESTED})

    class Attested(SignedCreated):
        def apply(self, aggregate: Attestation) -> None:
            aggregate.sha256 = self.data["sha256"]
            aggregate.title = self.data.get("title", "")
            aggregate.attested_by = self.actor

    def __init__(self) -> None:
        self.sha256 = ""
        self.title = ""
        self.attested_by = ""

    @staticmethod
    def check(fact: Fact) -> None:
        data = fact.data
        unknown = set(data) - {"sha256", "title", "media_type"}
        if unknown:
            raise InvalidAttestation(f"document.attested: unknown fields {sorted(unknown)}")
        if not isinstance(data.get("sha256"), str) or not _SHA256.match(data["sha256"]):
            raise InvalidAttestation("document.attested: data.sha256 must be 64 lowercase hex")
        for name in ("title", "media_type"):
            if name in data and (not isinstance(data[name], str) or len(data[name]) > 500):
                raise InvalidAttestation(f"document.attested: data.{name} must be a short string")

    @staticmethod
    def id_for(fact: Fact) -> UUID:
        return stream_id("attestation", fact.nonce)
