"""The application service: signed facts in, sealed events out.

``LedgerService`` is an ``eventsourcing`` application whose recorder seals every event into
the log (``ledger.sqlite`` / ``ledger.postgres``) and whose mapper stores each event as the
exact envelope that caused it (``ledger.mapper``). ``submit`` and ``submit_many`` take DSSE
envelopes and, for each one, in order:

1. parse the envelope and its canonical payload (``envelope.malformed``);
2. answer a duplicate (the same envelope again, or the same actor's idempotency key for the
   same fact) with the original result, recording nothing (``envelope.replayed`` or
   ``idempotency.conflict`` when the nonce or key comes back with a different fact);
3. find the key that must have signed it at the position it will take, registered before it
   and not revoked (``key.not_valid``), and check the signature (``signature.invalid``);
4. refuse a fact whose time is too far from the ledger's clock (``time.out_of_window``);
5. hand the fact to the handler of its type (``domain/<area>.py``), which validates the data
   (``fact.invalid``), checks the domain rules (``role.missing``, ``period.closed``, ...)
   and says which aggregate records it and which facts the ledger derives from it;
6. apply the event, then sign and apply the derived facts right after it.

A batch is saved in one transaction; a refused fact is reported and records nothing. The
checks of one fact (``parse_envelope``, ``check_signer``, ``examine``, ``record_event``) are
functions of this module, which the rule replay over the log (``domain/admission.py``) calls
too: one copy of every rule.

Aggregates are kept in a bounded in-process cache. Under the writer lock, before each batch,
the service reads what other writers appended since its last batch and drops those streams
from the cache (and replays their key facts), so its checks always see the committed state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from domain import (
    appeals,
    assessment,
    conduct,
    employees,
    hr_decisions,
    inspections,
    organisation,
    periods,
    publications,
    work,
)
from domain.attestations import Attestation, InvalidAttestation
from domain.context import Context, LedgerState, LoggedAct, Recording
from domain.errors import (
    IDEMPOTENCY_CONFLICT,
    TIME_WINDOW,
    AlreadyInitialised,
    InvalidFact,
    KeyRefused,
    MalformedFact,
    Refusal,
    ReplayRefused,
    RuleBroken,
    SignatureRefused,
    UnknownFactType,
    WriteFailed,
)
from domain.keys import Principal
from domain.schemas import FactData, validate
from domain.signed import SignedAggregate
from ledger.config import Database
from ledger.home import LedgerHome
from ledger.jobs import KEEPALIVE_SETTINGS, heal_pool, is_database_error, is_lock_timeout
from ledger.journal import Journal, Refused
from ledger.locks import WRITER_LOCK_ID
from ledger.postgres import SealedPostgresRecorder
from ledger.sealer import SealedBatch
from ledger.store import HeadMoved, ReplayedEnvelopeError, SealedLog, idempotency_token
from signing.checkpoint import log_verifier_keys
from signing.errors import (
    CanonicalFormError,
    EnvelopeError,
    KeyFactError,
    SignatureError,
)
from signing.facts import Fact, read_fact, sign_fact
from signing.keyring import KEY_FACT_TYPES, KEY_REGISTERED, KeyRecord, KeyRing, key_registration
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
DOMAIN_MODULES = (
    organisation,
    employees,
    publications,
    work,
    assessment,
    conduct,
    periods,
    appeals,
    hr_decisions,
    inspections,
)
#: every fact type a signer may submit (the ``*.ruling_applied`` facts the ledger derives from
#: an appeal decision are signed by the ledger alone), in the order the modules list them
SUBMITTED_TYPES: tuple[str, ...] = tuple(
    t
    for t in (
        *sorted(Principal.FACT_TYPES),
        *sorted(Attestation.FACT_TYPES),
        *(t for module in DOMAIN_MODULES for t in module.HANDLERS),
    )
    if not t.endswith(".ruling_applied")
)
#: the fact types only the ledger signs, each right after the fact it is derived from
DERIVED_TYPES: frozenset[str] = frozenset(
    t for module in DOMAIN_MODULES for t in module.HANDLERS if t.endswith(".ruling_applied")
)
MAX_BATCH = 1000
CACHE_SIZE = 50_000  # aggregates kept in memory between batches
RESCAN_LIMIT = 20_000  # more foreign entries than this since our last batch: drop the cache
CANNOT_DERIVE = "ledger.cannot_derive"
WRITER_LOCK_SECONDS = 60  # a writer waits at most this long for another process's batch
RETRY_PAUSE = 0.2  # seconds before a batch that met a lost connection is tried again

logger = logging.getLogger("kpi_ledger.service")


@dataclass(frozen=True)
class Appended:
    """Where an accepted fact landed: its position, stream and version, and its fact type
    (``duplicate``: it had landed there before; ``derived``: the facts the ledger appended
    because of it, in order)."""

    seq: int
    stream: str
    version: int
    type: str
    nonce: str
    duplicate: bool = False
    derived: tuple[Appended, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "stream": self.stream,
            "version": self.version,
            "type": self.type,
            "nonce": self.nonce,
            "duplicate": self.duplicate,
            "derived": [d.as_dict() for d in self.derived],
        }


Outcome = Appended | Refusal
Handler = Callable[[Context], Recording]
Screen = Callable[[Fact], None]  # raises a Refusal for a fact the caller may not submit

_DURATION = re.compile(r"^([0-9]+)([smhd])$")


def parse_duration(text: str, name: str) -> dt.timedelta | None:
    """``"72h"``, ``"5m"``, ``"30s"``, ``"3d"`` or ``"off"`` (None)."""
    if text == "off":
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{name} must look like 30s, 5m, 72h, 3d or off, not {text!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return dt.timedelta(**{unit: int(match.group(1))})


@dataclass(frozen=True)
class TimeWindow:
    """How far a fact's claimed time may lie from the ledger's clock at intake.

    Deadlines (appeals, declarations, periods) are judged on the fact's own time; this window
    stops an actor from back- or forward-dating a fact to beat one. ``past=None`` accepts any
    past time (importing a history, the demo's simulated clock).
    """

    past: dt.timedelta | None = dt.timedelta(hours=72)
    future: dt.timedelta = dt.timedelta(minutes=5)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TimeWindow:
        env = os.environ if env is None else env
        past = parse_duration(env.get("KPI_LEDGER_MAX_BACKDATE", "72h"), "KPI_LEDGER_MAX_BACKDATE")
        future = parse_duration(env.get("KPI_LEDGER_MAX_AHEAD", "5m"), "KPI_LEDGER_MAX_AHEAD")
        if future is None:
            raise ValueError("KPI_LEDGER_MAX_AHEAD cannot be off")
        return cls(past, future)


def _real_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Batch:
    """The working state of one ``submit_many`` call."""

    head: int
    pending: dict[UUID, SignedAggregate] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)  # in intake order: the seal order
    nonces: dict[str, int] = field(default_factory=dict)  # nonce -> input index
    tokens: dict[str, int] = field(default_factory=dict)  # idempotency token -> input index
    accepted: dict[int, list[Fact]] = field(default_factory=dict)  # input index -> facts
    duplicates: dict[int, int] = field(default_factory=dict)  # input index -> earlier index
    count: int = 0  # events accepted so far

    @property
    def position(self) -> int:
        return self.head + self.count


class LedgerService(Application[UUID]):
    name = "KpiLedger"
    env: ClassVar[dict[str, str]] = {
        "MAPPER_TOPIC": "ledger.mapper:EnvelopeMapper",
        "IS_SNAPSHOTTING_ENABLED": "no",
    }

    def __init__(
        self,
        database: Database,
        *,
        after_append: Callable[[int], object] | None = None,
        ledger_signer: SigningKey | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        window: TimeWindow | None = None,
        cache_size: int = CACHE_SIZE,
    ):
        super().__init__(database.env)
        recorder = self.recorder
        if not isinstance(recorder, SealedLog):
            raise TypeError("LedgerService needs a sealed recorder (ledger.sqlite/ledger.postgres)")
        self.sealed: SealedLog = recorder
        self.database = database
        self.keyring = KeyRing()
        self.working_keyring = self.keyring  # the batch's view, including its own key facts
        self._cursor = 0  # notifications up to here are reflected in the key ring and cache
        self._lock = threading.Lock()
        self.after_append = after_append
        self.ledger_signer = ledger_signer
        self.clock = clock or _real_clock
        self.window = window if window is not None else TimeWindow()
        self._cache: OrderedDict[UUID, SignedAggregate | None] = OrderedDict()  # None: absent
        self._cache_size = cache_size
        self._last_sealed: SealedBatch | None = None  # this process's last committed batch
        self._writer_file: Any = None  # SQLite: the writer's lock file (_file_lock)
        recorder.sealer.on_commit.append(self._sealed_batch)
        self._acts: OrderedDict[int, LoggedAct] = OrderedDict()
        self.unit_chains: dict[str, list[str]] = {}  # unit -> itself and its ancestors (saved)
        self.handlers: dict[str, Handler] = standard_handlers()

    @property
    def ledger_principal(self) -> str | None:
        return self.ledger_signer.name if self.ledger_signer is not None else None

    def register_handler(self, fact_types: Iterable[str], handler: Handler) -> None:
        for fact_type in fact_types:
            self.handlers[fact_type] = handler

    def bootstrap(
        self,
        ledger_key: SigningKey,
        admin: SigningKey,
        *,
        time: dt.datetime | None = None,
        nonces: tuple[str, str] | None = None,
    ) -> Appended:
        """Start an empty log: entry 0 is the administrator's self-signed registration, and
        the log's public identity (origin, verifier keys) is recorded for export bundles.
        With a ``ledger_signer``, entry 1 registers its key: the key of derived facts.
        ``time`` and ``nonces`` make the two entries reproducible (the demo's seed)."""
        self._refuse_started()
        first, second = nonces if nonces is not None else (None, None)
        envelopes = [
            key_registration(admin, admin.verifier(), admin=True, time=time, nonce=first).to_bytes()
        ]
        if self.ledger_signer is not None:
            envelopes.append(
                key_registration(
                    admin, self.ledger_signer.verifier(), time=time, nonce=second
                ).to_bytes()
            )
        outcomes = self.submit_many(envelopes)
        for outcome in outcomes:
            if isinstance(outcome, Refusal):
                raise outcome
        self.sealed.set_meta("origin", ledger_key.name)
        self.sealed.set_meta(
            "log_vkeys", "".join(k.to_text() + "\n" for k in log_verifier_keys(ledger_key))
        )
        entry_0 = outcomes[0]
        assert isinstance(entry_0, Appended)
        return entry_0

    def initialise(
        self,
        home: LedgerHome,
        origin: str,
        admin: SigningKey,
        *,
        facts_key: SigningKey | None = None,
        time: dt.datetime | None = None,
        nonces: tuple[str, str] | None = None,
    ) -> Appended:
        """Start a new ledger: refuse a database that holds one before touching anything,
        create ``home`` (the checkpoint key, the key of derived facts: ``facts_key`` or a new
        one), then ``bootstrap``. The one way ``init``, the demo and the benches start a log."""
        self._refuse_started()
        ledger_key = home.create(origin, facts_key=facts_key)
        self.ledger_signer = home.facts_key()
        return self.bootstrap(ledger_key, admin, time=time, nonces=nonces)

    def _refuse_started(self) -> None:
        if self.sealed.log_size() > 0:
            raise AlreadyInitialised(
                f"{self.database.display} already holds a ledger; nothing was changed"
            )

    # -- reading -------------------------------------------------------------------------
    def get_or_none(self, aggregate_id: UUID, pending: dict[UUID, SignedAggregate]) -> Any:
        """The aggregate as this batch sees it: pending changes, else cached, else stored.

        The cache also remembers a stream that does not exist (``None``), so that rules
        looking for an absent aggregate (no policy at this unit, no closed period) do not
        query the store every time: a stream comes into being only by a save, which
        replaces the entry (``_save``) or, written by another writer, drops it (``_sync``).
        """
        if aggregate_id in pending:
            return pending[aggregate_id]
        if aggregate_id in self._cache:
            self._cache.move_to_end(aggregate_id)
            return self._cache[aggregate_id]
        try:
            aggregate: SignedAggregate | None = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            aggregate = None
        self._keep(aggregate_id, aggregate)
        return aggregate

    def _remember(self, aggregate: SignedAggregate) -> None:
        self._keep(aggregate.id, aggregate)

    def _keep(self, aggregate_id: UUID, aggregate: SignedAggregate | None) -> None:
        self._cache[aggregate_id] = aggregate
        self._cache.move_to_end(aggregate_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def logged_act(self, seq: int) -> LoggedAct | None:
        """The entry at ``seq`` as a parsed fact (entries never change: cached)."""
        act = self._acts.get(seq)
        if act is None:
            entry = self.sealed.read_entry(seq)
            if entry is None:
                return None
            fact = read_fact(entry.envelope, strict=False)
            act = LoggedAct(seq, UUID(entry.stream), fact.type, fact)
            self._acts[seq] = act
            while len(self._acts) > 10_000:
                self._acts.popitem(last=False)
        return act

    def refresh_keyring(self) -> KeyRing:
        """Bring the key ring (and the cache) up to date with what others wrote."""
        with self.exclusive_writer():
            return self._sync()

    def _sync(self) -> KeyRing:
        """Catch up with entries appended since this service's last batch.

        Runs under the writer lock, where notification ids are in commit order. Streams that
        others changed leave the cache; key facts are replayed into the key ring. With an
        empty cache (or very many foreign entries) only the key facts are read.
        """
        top = self.recorder.max_notification_id() or 0
        if top <= self._cursor:
            return self.keyring
        if self._cache and top - self._cursor > RESCAN_LIMIT:
            self._cache.clear()
        topics = KEY_TOPICS if not self._cache else []
        while self._cursor < top:
            notifications = self.recorder.select_notifications(
                start=self._cursor + 1, limit=500, stop=top, topics=topics
            )
            keys = [n for n in notifications if n.topic in KEY_TOPICS]
            for n in notifications:
                self._cache.pop(_as_uuid(n.originator_id), None)
            if keys:
                seqs = self.sealed.seqs_for_notifications([n.id for n in keys])
                for n in sorted(keys, key=lambda n: seqs[n.id]):
                    self.keyring.apply(seqs[n.id], read_fact(n.state, strict=False))
            self._cursor = notifications[-1].id if len(notifications) == 500 else top
        return self.keyring

    # -- writing -------------------------------------------------------------------------
    def submit(self, envelope: bytes | str) -> Appended:
        """Record one signed fact, or raise the Refusal that explains why not."""
        outcome = self.submit_many([envelope])[0]
        if isinstance(outcome, Refusal):
            raise outcome
        return outcome

    def submit_many(
        self,
        envelopes: Sequence[bytes | str | Fact | Refusal],
        *,
        screen: Screen | Sequence[Screen | None] | None = None,
    ) -> list[Outcome]:
        """Record a batch in one transaction; each fact is accepted or refused on its own.
        ``screen`` (the HTTP API's: is the fact signed by the caller, does it belong to the
        endpoint) sees each parsed fact first and may raise a ``Refusal``; one for all the
        envelopes, or one per envelope (requests of several callers written together).

        A batch that cannot be written raises ``WriteFailed``, which says whether anything
        was recorded (``recorded=False``: nothing, for certain; None: unknown). A database
        connection lost before anything was stored is tried once more."""
        if len(envelopes) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} envelopes per batch")
        try:
            return self._submit_once(envelopes, screen)
        except WriteFailed as exc:
            if exc.recorded is not False or not (
                _connection_lost(exc) or isinstance(exc.__cause__, HeadMoved)
            ):
                raise
            logger.warning("write failed, nothing recorded; trying once more: %s", exc)
        time.sleep(RETRY_PAUSE)
        self.heal()
        return self._submit_once(envelopes, screen)

    def heal(self) -> None:
        """After a lost connection: drop the pool's idle connections that are broken too (a
        server restart or ``pg_terminate_backend`` ends them all at once, and each would
        otherwise fail one request before the pool notices)."""
        heal_pool(getattr(self.sealed, "datastore", None))

    def _submit_once(
        self,
        envelopes: Sequence[bytes | str | Fact | Refusal],
        screen: Screen | Sequence[Screen | None] | None,
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(envelopes)
        with self.exclusive_writer():
            batch = _Batch(0)
            try:
                self._sync()
                top = self._cursor
                ring = self.keyring.copy()
                self.working_keyring = ring
                batch = _Batch(self.sealed.log_size())
                self._examine_all(envelopes, batch, ring, outcomes, screen)
            except Refusal:
                raise
            except Exception as exc:  # nothing was written yet
                self._forget(batch.pending)
                raise WriteFailed(f"nothing was recorded: {exc}", recorded=False) from exc
            except BaseException:
                self._forget(batch.pending)
                raise
            try:
                if batch.events and self._save(batch, outcomes, top):
                    self.keyring = ring
            except BaseException:
                self._forget(batch.pending)
                raise
            for i, j in batch.duplicates.items():
                earlier = outcomes[j]
                outcomes[i] = (
                    replace(earlier, duplicate=True) if isinstance(earlier, Appended) else earlier
                )
        if batch.events and self.after_append is not None:
            self.after_append(batch.position)
        self._journal_refusals(envelopes, outcomes, batch)
        return [o for o in outcomes if o is not None]

    @functools.cached_property
    def journal(self) -> Journal:
        """The refusal journal (``ledger/journal.py``): outside the log, on its database."""
        return Journal(getattr(self.sealed, "datastore", None))

    def _journal_refusals(
        self,
        envelopes: Sequence[bytes | str | Fact | Refusal],
        outcomes: Sequence[Outcome | None],
        batch: _Batch,
    ) -> None:
        """Journal the facts this batch refused on their own (not the duplicates answered
        with their first result, nor facts the save refused as a whole). One insert, after
        the writer lock; a failure is only logged: the refusals stand."""
        rows = [
            Refused.of(envelopes[i], o.rule, o.detail, o.actor, o.fact_type)
            for i, o in enumerate(outcomes)
            if isinstance(o, Refusal)
            and i not in batch.accepted
            and i not in batch.duplicates
            and not o.screened
        ]
        if rows:
            try:
                self.journal.record(rows, self.clock())
            except Exception as exc:  # record() logs its own failures; this is a last guard
                logger.warning("refusals not journaled: %s", exc)

    def _examine_all(
        self,
        envelopes: Sequence[bytes | str | Fact | Refusal],
        batch: _Batch,
        ring: KeyRing,
        outcomes: list[Outcome | None],
        screen: Screen | Sequence[Screen | None] | None = None,
    ) -> None:
        parsed = [self._parse(raw) for raw in envelopes]
        screens = list(screen) if isinstance(screen, Sequence) else [screen] * len(envelopes)
        facts = [p for p in parsed if isinstance(p, Fact)]
        used = self.sealed.nonce_seqs([f.nonce for f in facts])
        used_tokens = self.sealed.idempotency_seqs(
            sorted({_token(f) for f in facts if f.idempotency_key is not None})
        )
        for i, fact_or_refusal in enumerate(parsed):
            try:
                if isinstance(fact_or_refusal, Refusal):
                    raise fact_or_refusal
                fact = fact_or_refusal
                check = screens[i]
                if check is not None:
                    try:
                        check(fact)
                    except Refusal as screened:
                        # the caller's own screen (who may send what, or a command's own
                        # condition), before the signature is checked: not an attempt of the
                        # fact's actor, so not journaled
                        screened.screened = True
                        raise
                earlier = self._duplicate(fact, used, batch)
                if earlier is None:
                    record = self._check(fact, batch.position, ring)
                    earlier = self._same_key(fact, used_tokens, batch)
                if earlier is not None:  # answered with the first result, recorded once
                    if isinstance(earlier, Appended):
                        outcomes[i] = earlier
                    else:
                        batch.duplicates[i] = earlier
                    continue
                self._check_time(fact)
                recording = examine(
                    self, self.handlers, fact, batch.position, record.admin, batch.pending
                )
            except Refusal as refusal:
                outcomes[i] = refusal
                continue
            recorded = [fact]
            self._apply(fact, recording, batch, ring, i)
            for n, derived in enumerate(recording.derived):
                recorded.append(self._derive(fact, n, derived.type, derived.data, batch, ring, i))
            batch.accepted[i] = recorded

    def _derive(
        self,
        cause: Fact,
        n: int,
        fact_type: str,
        data: dict[str, Any],
        batch: _Batch,
        ring: KeyRing,
        index: int,
    ) -> Fact:
        """Sign, check and apply a fact the ledger derives from ``cause``.

        Its nonce and time follow from the cause, so an inspector can recompute it. The cause's
        handler checked everything it needs: a refusal here is a bug, and aborts the batch.
        """
        assert self.ledger_signer is not None
        nonce = derived_nonce(cause.nonce, n)
        envelope = sign_fact(self.ledger_signer, fact_type, data, time=cause.time, nonce=nonce)
        fact = read_fact(envelope.to_bytes(), strict=True)
        try:
            record = self._check(fact, batch.position, ring)
            recording = examine(
                self, self.handlers, fact, batch.position, record.admin, batch.pending
            )
        except Refusal as refusal:
            raise RuntimeError(f"a fact derived from {cause.type} was refused: {refusal}") from None
        self._apply(fact, recording, batch, ring, index)
        return fact

    def _apply(
        self, fact: Fact, recording: Recording, batch: _Batch, ring: KeyRing, index: int
    ) -> None:
        aggregate = record_event(fact, recording)
        batch.pending[aggregate.id] = aggregate
        batch.events.extend(aggregate.collect_events())
        if fact.type in KEY_FACT_TYPES:
            ring.apply(batch.position, fact)
        batch.nonces[fact.nonce] = index
        if fact.idempotency_key is not None:
            batch.tokens[_token(fact)] = index
        batch.count += 1

    def precheck(self, envelopes: Sequence[bytes | str]) -> list[Fact | Refusal]:
        """Parse ``envelopes`` and check their signatures, outside the writer lock.

        What this does needs no lock and no database: the envelope's form, and the
        signature against the key its key id names, if the ledger knows that key now. A
        checked signature is remembered on the fact, so that ``submit_many`` given these facts
        does the rest (which key may sign at which position, the rules, the seal) under the
        lock without checking it again; a fact whose key is not known yet is checked there.
        Ed25519 releases the GIL, so threads that precheck run beside the writer (the HTTP
        API prechecks in its request threads)."""
        ring = self.keyring
        out: list[Fact | Refusal] = []
        for raw in envelopes:
            parsed = self._parse(raw)
            if isinstance(parsed, Fact):
                record = ring.keys.get(parsed.keyid)
                if record is not None:
                    # a bad signature is refused under the lock, with the rule that applies
                    with contextlib.suppress(SignatureError):
                        parsed.verify_signature(record.key)
            out.append(parsed)
        return out

    @staticmethod
    def _parse(raw: bytes | str | Fact | Refusal) -> Fact | Refusal:
        return parse_envelope(raw)

    def _original(self, seq: int) -> tuple[Appended, Fact]:
        entry = self.sealed.read_entry(seq)
        assert entry is not None
        fact = read_fact(entry.envelope, strict=False)
        appended = Appended(seq, entry.stream, entry.version, fact.type, fact.nonce, True)
        return appended, fact

    def _duplicate(self, fact: Fact, used: dict[str, int], batch: _Batch) -> Appended | int | None:
        """The earlier result of this very envelope, or None; a reused nonce is refused."""
        who = {"fact_type": fact.type, "actor": fact.actor}
        seq = used.get(fact.nonce)
        if seq is not None:
            original, stored = self._original(seq)
            if stored.envelope_bytes == fact.envelope_bytes:
                return original
            raise ReplayRefused(
                f"nonce {fact.nonce} was already used by the entry at position {seq}",
                original_seq=seq,
                **who,
            )
        index = batch.nonces.get(fact.nonce)
        if index is None:
            return None
        if batch.accepted[index][0].envelope_bytes == fact.envelope_bytes:
            return index  # the same envelope twice in one batch: the first one's result
        raise ReplayRefused(
            f"nonce {fact.nonce} is used twice in this batch", original_seq=None, **who
        )

    def _same_key(
        self, fact: Fact, used_tokens: dict[str, int], batch: _Batch
    ) -> Appended | int | None:
        """The earlier result for the actor's idempotency key, if the fact is the same."""
        if fact.idempotency_key is None:
            return None
        token = _token(fact)
        seq = used_tokens.get(token)
        if seq is not None:
            original, stored = self._original(seq)
            earlier: Appended | int = original
        elif token in batch.tokens:
            index = batch.tokens[token]
            stored = batch.accepted[index][0]
            earlier = index
        else:
            return None
        if stored.type != fact.type or stored.data != fact.data:
            raise RuleBroken(
                f"idempotency key {fact.idempotency_key!r} was used for another fact"
                + (f" (position {seq})" if seq is not None else " in this batch"),
                rule=IDEMPOTENCY_CONFLICT,
                fact_type=fact.type,
                actor=fact.actor,
            )
        return earlier

    def _check(self, fact: Fact, position: int, ring: KeyRing) -> KeyRecord:
        return check_signer(self.handlers, fact, position, ring)

    def _check_time(self, fact: Fact) -> None:
        now = self.clock()
        claimed = fact.claimed_at
        window = self.window
        if claimed > now + window.future or (
            window.past is not None and claimed < now - window.past
        ):
            raise RuleBroken(
                f"the fact claims {fact.time}; the ledger's clock reads"
                f" {now:%Y-%m-%dT%H:%M:%SZ} and accepts times from"
                f" {'any time' if window.past is None else f'{window.past} before'}"
                f" to {window.future} after it (KPI_LEDGER_MAX_BACKDATE and"
                " KPI_LEDGER_MAX_AHEAD set the window)",
                rule=TIME_WINDOW,
                fact_type=fact.type,
                actor=fact.actor,
            )

    @contextmanager
    def exclusive_writer(self) -> Iterator[None]:
        """One writer at a time, across threads and (on PostgreSQL) processes.

        Keys are checked at the positions the facts will take; holding this from the check
        to the commit makes those the positions they get. On PostgreSQL the lock is a session
        advisory lock on a connection of its own, taken with a lock timeout (a writer stuck
        elsewhere makes this one fail, with nothing recorded, instead of waiting for ever).
        Releasing it cannot change what the batch did: if the release fails (the connection
        was cut after the commit), the connection is closed, and the server releases the lock
        with its session.
        """
        with self._lock:
            if not isinstance(self.sealed, SealedPostgresRecorder):
                with self._file_lock():
                    yield
                return
            with contextlib.ExitStack() as stack:
                try:
                    conn = stack.enter_context(self.sealed.datastore.get_connection())
                    # A host that vanishes without closing its connection keeps this lock
                    # until the server notices: make the server probe the session (about
                    # 25 s), as the jobs' lock connections do (ledger/jobs.py).
                    for setting in KEEPALIVE_SETTINGS:
                        conn.execute(f"SET {setting}")
                    with conn.transaction():  # the lock outlives it; the timeout does not
                        conn.execute(f"SET LOCAL lock_timeout = '{WRITER_LOCK_SECONDS}s'")
                        conn.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK_ID,))
                except Exception as exc:
                    raise WriteFailed(
                        f"nothing was recorded: cannot take the writer lock: {exc}",
                        recorded=False,
                    ) from exc
                try:
                    yield
                finally:
                    _release_writer_lock(conn)

    def close(self) -> None:
        if self._writer_file is not None:
            self._writer_file.close()
            self._writer_file = None
        super().close()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """SQLite: the writer lock across processes, an exclusive ``flock`` on
        ``<database file>.writer.lock`` from the key check to the commit (SQLite's own lock
        covers the transaction only); it dies with its process. An in-memory database has
        one process: nothing to lock."""
        path = self.database.env.get("SQLITE_DBNAME", "")
        if not path or path == ":memory:" or path.startswith("file::memory:"):
            yield
            return
        if self._writer_file is None:
            self._writer_file = open(path + ".writer.lock", "a+")  # noqa: SIM115 - kept open
        deadline = time.monotonic() + WRITER_LOCK_SECONDS
        while True:  # as PostgreSQL's lock timeout: a writer stuck elsewhere fails this one
            try:
                fcntl.flock(self._writer_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WriteFailed(
                        "nothing was recorded: another process has held the ledger's writer"
                        f" lock for over {WRITER_LOCK_SECONDS} s",
                        recorded=False,
                    ) from None
                time.sleep(0.002)
        try:
            yield
        finally:
            fcntl.flock(self._writer_file, fcntl.LOCK_UN)

    def _forget(self, pending: dict[UUID, SignedAggregate]) -> None:
        for aggregate_id in pending:
            self._cache.pop(aggregate_id, None)

    def _save(self, batch: _Batch, outcomes: list[Outcome | None], top: int) -> bool:
        """Save the batch in one transaction; False (and refusals) if a concurrent writer
        got in the way."""
        self.sealed.expected_head = batch.head
        try:
            recordings = self.save(*batch.events)
        except HeadMoved as exc:  # checked inside the transaction, before anything was stored
            self._forget(batch.pending)
            raise WriteFailed(f"nothing was recorded: {exc}", recorded=False) from exc
        except (ReplayedEnvelopeError, IntegrityError) as exc:
            self._forget(batch.pending)
            replay = isinstance(exc, ReplayedEnvelopeError)
            for i, facts in batch.accepted.items():
                fact = facts[0]
                outcomes[i] = (
                    ReplayRefused(
                        f"{exc}; another writer recorded it meanwhile",
                        original_seq=self.sealed.nonce_seq(fact.nonce),
                        fact_type=fact.type,
                        actor=fact.actor,
                    )
                    if replay
                    else Refusal(
                        f"conflicting concurrent write, submit again: {exc}",
                        rule="stream.conflict",
                        fact_type=fact.type,
                        actor=fact.actor,
                    )
                )
            batch.events.clear()
            return False
        except Exception as exc:
            self._forget(batch.pending)
            return self._settle(batch, outcomes, exc)
        finally:
            self.sealed.expected_head = None
        ids = [r.notification.id for r in recordings]
        seqs = self._committed_seqs(ids)
        by_nonce: dict[str, Appended] = {}
        for r in recordings:
            event = r.domain_event
            nonce = event.fact.nonce  # type: ignore[attr-defined]
            by_nonce[nonce] = Appended(
                seq=seqs[r.notification.id],
                stream=str(event.originator_id),
                version=event.originator_version,
                type=event.fact.type,  # type: ignore[attr-defined]
                nonce=nonce,
            )
        for i, facts in batch.accepted.items():
            outcomes[i] = replace(
                by_nonce[facts[0].nonce], derived=tuple(by_nonce[f.nonce] for f in facts[1:])
            )
        for aggregate in batch.pending.values():
            self._remember(aggregate)
        if ids and min(ids) == top + 1:  # nobody else wrote between our sync and our commit
            self._cursor = max(ids)
        return True


    def _committed_seqs(self, ids: Sequence[int]) -> dict[int, int]:
        """The positions the batch just committed took: from the sealer's own rows (no
        query after the commit, which a lost connection could make fail although the batch
        is stored), else read from the log."""
        sealed = self._last_sealed
        if sealed is not None:
            seqs = {row[1]: row[0] for row in sealed.entry_rows}
            if all(i in seqs for i in ids):
                return seqs
        try:
            return self.sealed.seqs_for_notifications(ids)
        except Exception as exc:
            raise WriteFailed(
                f"the batch was recorded, but its positions could not be read ({exc}):"
                " send the same envelopes again to learn them",
                recorded=True,
            ) from exc

    def _settle(self, batch: _Batch, outcomes: list[Outcome | None], error: Exception) -> bool:
        """The save failed with ``error``: find out whether the batch is in the log.

        The batch is one transaction: either all its entries are stored or none. Its nonces
        are looked up once no write is in flight; all found, the batch is answered with its
        positions (it was recorded); none found, ``WriteFailed(recorded=False)``; the lookup
        failing too, ``WriteFailed(recorded=None)``: nobody can say yet."""
        facts = [f for recorded in batch.accepted.values() for f in recorded]
        try:
            found = self.sealed.settled_nonce_seqs([f.nonce for f in facts])
        except Exception as check:
            raise WriteFailed(
                f"the write's outcome is unknown ({error}; the log could not be read to tell:"
                f" {check}): send the same envelopes again, a recorded one is answered with"
                " its position",
                recorded=None,
            ) from error
        if not found:
            raise WriteFailed(f"nothing was recorded: {error}", recorded=False) from error
        if len(found) < len(facts):
            raise WriteFailed(
                f"the write's outcome is unclear ({error}): {len(found)} of {len(facts)} of its"
                " nonces are in the log; send the same envelopes again",
                recorded=None,
            ) from error
        logger.warning("the connection failed after the commit; the batch is recorded: %s", error)
        where = {e.fact.nonce: e for e in batch.events}  # type: ignore[attr-defined]
        appended = {
            f.nonce: Appended(
                seq=found[f.nonce],
                stream=str(where[f.nonce].originator_id),
                version=where[f.nonce].originator_version,
                type=f.type,
                nonce=f.nonce,
            )
            for f in facts
        }
        for i, recorded in batch.accepted.items():
            outcomes[i] = replace(
                appended[recorded[0].nonce],
                derived=tuple(appended[f.nonce] for f in recorded[1:]),
            )
        return True

    def _sealed_batch(self, batch: SealedBatch) -> None:
        self._last_sealed = batch


def _release_writer_lock(conn: Any) -> None:
    try:
        conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK_ID,))
    except Exception as exc:
        logger.warning("could not release the writer lock (%s); closing its connection", exc)
        with contextlib.suppress(Exception):
            conn.close()


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` came from the database connection (worth one more try at once), not
    from a rule, a bug, or a lock another writer holds (which would only wait as long again)."""
    return is_database_error(exc) and not is_lock_timeout(exc)


def _token(fact: Fact) -> str:
    assert fact.idempotency_key is not None
    return idempotency_token(fact.actor, fact.idempotency_key)


def _as_uuid(originator_id: Any) -> UUID:
    return originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))


# -- the checks of one fact: the intake's, and the rule replay's (domain/admission.py) ------


def standard_handlers() -> dict[str, Handler]:
    """The handler of every fact type the ledger knows: the key facts, attestations, and each
    domain module's ``HANDLERS`` wrapped with schema validation."""
    handlers: dict[str, Handler] = dict.fromkeys(Principal.FACT_TYPES, _handle_key_fact)
    handlers.update(dict.fromkeys(Attestation.FACT_TYPES, _handle_attestation))
    for module in DOMAIN_MODULES:
        for fact_type, (model, handler) in module.HANDLERS.items():
            handlers[fact_type] = _validating(model, handler)
    return handlers


def parse_envelope(raw: bytes | str | Fact | Refusal) -> Fact | Refusal:
    """Step 1: the envelope and its canonical payload, or ``envelope.malformed``."""
    if isinstance(raw, Fact | Refusal):
        return raw
    try:
        return read_fact(raw.encode() if isinstance(raw, str) else raw, strict=True)
    except (EnvelopeError, CanonicalFormError) as exc:
        return MalformedFact(str(exc))


def check_signer(
    handlers: Mapping[str, Handler], fact: Fact, position: int, ring: KeyRing
) -> KeyRecord:
    """Steps 3-4: the fact type is known, the key is valid at ``position`` for the actor (and
    may sign a key fact), and the signature verifies. Returns the key's record."""
    who = {"fact_type": fact.type, "actor": fact.actor}
    if fact.type not in handlers:
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
    return record


def examine(
    state: LedgerState,
    handlers: Mapping[str, Handler],
    fact: Fact,
    position: int,
    admin: bool,
    pending: dict[UUID, SignedAggregate],
) -> Recording:
    """Step 6: the handler of the fact's type judges it against ``state`` at ``position``
    (its data, the domain rules) and says where its event goes and what the ledger derives."""
    recording = handlers[fact.type](Context(state, fact, position, admin, pending))
    if recording.derived and state.ledger_principal is None:
        raise RuleBroken(
            "this ledger runs without its own signing key: it cannot derive the"
            " compensating facts this decision needs",
            rule=CANNOT_DERIVE,
            fact_type=fact.type,
            actor=fact.actor,
        )
    return recording


def derived_nonce(cause_nonce: str, n: int) -> str:
    """The nonce of the ``n``-th fact the ledger derives from the fact with ``cause_nonce``."""
    return hashlib.sha256(f"kpi-ledger derived\n{cause_nonce}\n{n}".encode()).hexdigest()[:32]


def placement(recording: Recording) -> tuple[UUID, int, type[Any]]:
    """Where ``record_event`` will put the recording's event: stream, version, event class."""
    if recording.create is not None:
        return recording.create[1], 1, recording.event
    assert recording.aggregate is not None
    return recording.aggregate.id, recording.aggregate.version + 1, recording.event


def record_event(fact: Fact, recording: Recording) -> SignedAggregate:
    """Step 7: apply the fact's event as the recording says (a new stream, or the next event
    of an aggregate); the event waits on the aggregate until ``collect_events``."""
    if recording.create is not None:
        cls, aggregate_id = recording.create
        aggregate = cls._start(recording.event, aggregate_id, fact)  # type: ignore[arg-type]
    else:
        assert recording.aggregate is not None
        aggregate = recording.aggregate
        aggregate._record(recording.event, fact)
    return aggregate


def _validating(model: type[FactData], handler: Callable[[Context, Any], Recording]) -> Handler:
    """A handler that first validates the fact's data against its model."""

    def handle(ctx: Context) -> Recording:
        data = validate(model, ctx.fact.data, ctx.fact.type, ctx.fact.actor)
        return handler(ctx, data)

    handle.__qualname__ = handler.__qualname__
    return handle


def _handle_key_fact(ctx: Context) -> Recording:
    fact = ctx.fact
    if fact.type == KEY_REGISTERED or "principal" in fact.data:
        principal_name = fact.data["principal"]
    else:  # key.revoked names only the key
        record = ctx.app.working_keyring.keys.get(fact.data["keyid"])
        if record is None:
            raise InvalidFact(
                f"unknown key {fact.data['keyid']!r}", fact_type=fact.type, actor=fact.actor
            )
        principal_name = record.principal
    principal = ctx.get(Principal, Principal.id_for(principal_name))
    if principal is None:
        if fact.type != KEY_REGISTERED:
            raise InvalidFact(
                f"no principal {principal_name!r}", fact_type=fact.type, actor=fact.actor
            )
        return ctx.start(Principal, Principal.id_for(principal_name), Principal.Enrolled)
    return ctx.append(principal, Principal.event_for(fact.type))


def _handle_attestation(ctx: Context) -> Recording:
    try:
        Attestation.check(ctx.fact)
    except InvalidAttestation as exc:
        raise InvalidFact(str(exc), fact_type=ctx.fact.type, actor=ctx.fact.actor) from None
    return ctx.start(Attestation, Attestation.id_for(ctx.fact), Attestation.Attested)
