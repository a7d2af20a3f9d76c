"""The application service: signed facts in, sealed events out.

``LedgerService`` is an ``eventsourcing`` application whose recorder seals every event into
the log (``ledger.sqlite`` / ``ledger.postgres``) and whose mapper stores each event as the
exact envelope that caused it (``ledger.mapper``). ``submit`` and ``submit_many`` take DSSE
envelopes and, for each one, in order:

1. parse the envelope and its canonical payload (``envelope.malformed``);
2. refuse a nonce already in the log or earlier in the batch (``envelope.replayed``);
3. find the key that must have signed it at the position it will take, registered before it
   and not revoked (``key.not_valid``), and check the signature (``signature.invalid``);
4. hand the fact to the handler of its type, which applies the domain rules and returns the
   aggregate holding the new event (``fact.unknown_type``, ``fact.invalid``, ...).

A batch is saved in one transaction; a refused fact is reported and records nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from domain.attestations import Attestation, InvalidAttestation
from domain.errors import (
    AlreadyInitialised,
    InvalidFact,
    KeyRefused,
    MalformedFact,
    Refusal,
    ReplayRefused,
    SignatureRefused,
    UnknownFactType,
)
from domain.keys import Principal
from domain.signed import SignedAggregate
from ledger.config import Database
from ledger.postgres import SealedPostgresRecorder
from ledger.store import ReplayedEnvelopeError, SealedLog
from signing.checkpoint import log_verifier_keys
from signing.errors import (
    CanonicalFormError,
    EnvelopeError,
    KeyFactError,
    SignatureError,
)
from signing.facts import Fact, read_fact
from signing.keyring import KEY_FACT_TYPES, KEY_REGISTERED, KeyRing, key_registration
from signing.keys import SigningKey

KEY_TOPICS = [
    get_topic(cls)
    for cls in (
        Principal.Enrolled,
        Principal.KeyRegistered,
        Principal.KeyRotated,
        Principal.KeyRevoked,
    )
]
MAX_BATCH = 1000
WRITER_LOCK_ID = 0x6B70696C  # pg_advisory_lock key of the ledger's writer ("kpil")


@dataclass(frozen=True)
class Appended:
    """Where an accepted fact landed."""

    seq: int
    stream: str
    version: int
    type: str
    nonce: str


Outcome = Appended | Refusal
Handler = Callable[["LedgerService", Fact, dict[UUID, SignedAggregate]], SignedAggregate]


class LedgerService(Application[UUID]):
    name = "KpiLedger"
    env: ClassVar[dict[str, str]] = {
        "MAPPER_TOPIC": "ledger.mapper:EnvelopeMapper",
        "IS_SNAPSHOTTING_ENABLED": "no",
    }

    def __init__(self, database: Database, *, after_append: Callable[[int], object] | None = None):
        super().__init__(database.env)
        recorder = self.recorder
        if not isinstance(recorder, SealedLog):
            raise TypeError("LedgerService needs a sealed recorder (ledger.sqlite/ledger.postgres)")
        self.sealed: SealedLog = recorder
        self.database = database
        self.keyring = KeyRing()
        self.working_keyring = self.keyring  # the batch's view, including its own key facts
        self._key_cursor = 0  # last notification id scanned for key facts
        self._lock = threading.Lock()
        self.after_append = after_append
        self.handlers: dict[str, Handler] = {}
        self.register_handler(Principal.FACT_TYPES, _handle_key_fact)
        self.register_handler(Attestation.FACT_TYPES, _handle_attestation)

    def register_handler(self, fact_types: Iterable[str], handler: Handler) -> None:
        for fact_type in fact_types:
            self.handlers[fact_type] = handler

    def bootstrap(self, ledger_key: SigningKey, admin: SigningKey) -> Appended:
        """Start an empty log: entry 0 is the administrator's self-signed registration, and
        the log's public identity (origin, verifier keys) is recorded for export bundles."""
        if self.sealed.log_size() > 0:
            raise AlreadyInitialised(
                f"{self.database.display} already holds a ledger; nothing was changed"
            )
        appended = self.submit(key_registration(admin, admin.verifier(), admin=True).to_bytes())
        self.sealed.set_meta("origin", ledger_key.name)
        self.sealed.set_meta(
            "log_vkeys", "".join(k.to_text() + "\n" for k in log_verifier_keys(ledger_key))
        )
        return appended

    # -- reading -------------------------------------------------------------------------
    def get_or_none(self, aggregate_id: UUID, pending: dict[UUID, SignedAggregate]) -> Any:
        if aggregate_id in pending:
            return pending[aggregate_id]
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def refresh_keyring(self) -> KeyRing:
        """Bring the key ring up to date with key facts written since the last scan.

        Runs under the writer lock, where notification ids are in commit order: the scan goes
        up to the newest id at its start, and the cursor moves there even when no key fact
        was found, so each scan reads only what is new.
        """
        top = self.recorder.max_notification_id() or 0
        while self._key_cursor < top:
            notifications = self.recorder.select_notifications(
                start=self._key_cursor + 1, limit=500, stop=top, topics=KEY_TOPICS
            )
            seqs = self.sealed.seqs_for_notifications([n.id for n in notifications])
            for n in sorted(notifications, key=lambda n: seqs[n.id]):
                self.keyring.apply(seqs[n.id], read_fact(n.state, strict=False))
            self._key_cursor = notifications[-1].id if len(notifications) == 500 else top
        return self.keyring

    # -- writing -------------------------------------------------------------------------
    def submit(self, envelope: bytes | str) -> Appended:
        """Record one signed fact, or raise the Refusal that explains why not."""
        outcome = self.submit_many([envelope])[0]
        if isinstance(outcome, Refusal):
            raise outcome
        return outcome

    def submit_many(self, envelopes: Sequence[bytes | str]) -> list[Outcome]:
        """Record a batch in one transaction; each fact is accepted or refused on its own."""
        if len(envelopes) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} envelopes per batch")
        with self.exclusive_writer():
            ring = self.refresh_keyring().copy()
            self.working_keyring = ring
            head = self.sealed.log_size()
            outcomes: list[Outcome | None] = [None] * len(envelopes)
            accepted: list[tuple[int, Fact]] = []
            pending: dict[UUID, SignedAggregate] = {}
            events: list[Any] = []  # in intake order: the order they are sealed in
            nonces: set[str] = set()
            parsed = [self._parse(raw) for raw in envelopes]
            used = self.sealed.nonce_seqs([p.nonce for p in parsed if isinstance(p, Fact)])
            for i, fact_or_refusal in enumerate(parsed):
                try:
                    if isinstance(fact_or_refusal, Refusal):
                        raise fact_or_refusal
                    fact = self._check(fact_or_refusal, head + len(accepted), ring, nonces, used)
                    aggregate = self.handlers[fact.type](self, fact, pending)
                except Refusal as refusal:
                    outcomes[i] = refusal
                    continue
                pending[aggregate.id] = aggregate
                events.extend(aggregate.collect_events())
                if fact.type in KEY_FACT_TYPES:
                    ring.apply(head + len(accepted), fact)
                nonces.add(fact.nonce)
                accepted.append((i, fact))
            if accepted:
                self._save(events, accepted, outcomes)
                self.keyring = ring
        if accepted and self.after_append is not None:
            self.after_append(head + len(accepted))
        return [o for o in outcomes if o is not None]

    @staticmethod
    def _parse(raw: bytes | str) -> Fact | Refusal:
        try:
            return read_fact(raw.encode() if isinstance(raw, str) else raw, strict=True)
        except (EnvelopeError, CanonicalFormError) as exc:
            return MalformedFact(str(exc))

    def _check(
        self, fact: Fact, position: int, ring: KeyRing, nonces: set[str], used: dict[str, int]
    ) -> Fact:
        who = {"fact_type": fact.type, "actor": fact.actor}
        original = used.get(fact.nonce)
        if original is not None or fact.nonce in nonces:
            raise ReplayRefused(
                f"nonce {fact.nonce} was already used"
                + (f" by the entry at position {original}" if original is not None else ""),
                original_seq=original,
                **who,
            )
        if fact.type not in self.handlers:
            raise UnknownFactType(f"no fact type {fact.type!r} is known to this ledger", **who)
        try:
            record = ring.signer(position, fact)
        except KeyFactError as exc:
            raise InvalidFact(str(exc), rule="key.rule", **who) from None
        except SignatureError as exc:
            raise KeyRefused(str(exc), **who) from None
        try:
            fact.verify_signature(record.key)
        except SignatureError as exc:
            raise SignatureRefused(str(exc), **who) from None
        return fact

    @contextmanager
    def exclusive_writer(self) -> Iterator[None]:
        """One writer at a time, across threads and (on PostgreSQL) processes.

        Keys are checked at the positions the facts will take; holding this from the check
        to the commit makes those the positions they get.
        """
        with self._lock:
            if not isinstance(self.sealed, SealedPostgresRecorder):
                yield
                return
            with self.sealed.datastore.get_connection() as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK_ID,))
                try:
                    yield
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK_ID,))

    def _save(
        self,
        events: list[Any],
        accepted: list[tuple[int, Fact]],
        outcomes: list[Outcome | None],
    ) -> None:
        try:
            recordings = self.save(*events)
        except ReplayedEnvelopeError as exc:  # another writer used the nonce meanwhile
            for i, fact in accepted:
                outcomes[i] = ReplayRefused(
                    str(exc),
                    original_seq=self.sealed.nonce_seq(fact.nonce),
                    fact_type=fact.type,
                    actor=fact.actor,
                )
            return
        except IntegrityError as exc:  # a concurrent writer changed one of the streams
            for i, fact in accepted:
                outcomes[i] = Refusal(
                    f"conflicting concurrent write, submit again: {exc}",
                    rule="stream.conflict",
                    fact_type=fact.type,
                    actor=fact.actor,
                )
            return
        by_nonce = {}
        seqs = self.sealed.seqs_for_notifications([r.notification.id for r in recordings])
        for r in recordings:
            event = r.domain_event
            by_nonce[event.fact.nonce] = Appended(  # type: ignore[attr-defined]
                seq=seqs[r.notification.id],
                stream=str(event.originator_id),
                version=event.originator_version,
                type=r.notification.topic,
                nonce=event.fact.nonce,  # type: ignore[attr-defined]
            )
        for i, fact in accepted:
            outcomes[i] = by_nonce[fact.nonce]


def _handle_key_fact(
    app: LedgerService, fact: Fact, pending: dict[UUID, SignedAggregate]
) -> SignedAggregate:
    if fact.type == KEY_REGISTERED or "principal" in fact.data:
        principal_name = fact.data["principal"]
    else:  # key.revoked names only the key
        record = app.working_keyring.keys.get(fact.data["keyid"])
        if record is None:
            raise InvalidFact(
                f"unknown key {fact.data['keyid']!r}", fact_type=fact.type, actor=fact.actor
            )
        principal_name = record.principal
    principal: Principal | None = app.get_or_none(Principal.id_for(principal_name), pending)
    if principal is None:
        if fact.type != KEY_REGISTERED:
            raise InvalidFact(
                f"no principal {principal_name!r}", fact_type=fact.type, actor=fact.actor
            )
        return Principal.enrol(fact)
    principal.record(fact)
    return principal


def _handle_attestation(
    app: LedgerService, fact: Fact, pending: dict[UUID, SignedAggregate]
) -> SignedAggregate:
    try:
        return Attestation.attest(fact)
    except InvalidAttestation as exc:
        raise InvalidFact(str(exc), fact_type=fact.type, actor=fact.actor) from None
