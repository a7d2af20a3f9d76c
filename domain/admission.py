"""The rule replay: would the intake have accepted each entry of the log, at its position?

The verifier (``signing/verify.py``) proves that the log holds the bytes that were sealed, in
order, each signed by a key valid at its position. It does not prove that the ledger's own
intake accepted them: a well-formed row added behind the service's back — signed with a
registered key and a fresh nonce, but for a fact the rules refuse — passes every integrity
check. The rule replay closes that gap. It reads the entries in log order and, for each one,
runs the service's own checks (``domain/service.py``: the same functions the intake calls,
on the same handlers) against the state *as of that entry's position*:

1. the envelope and its canonical payload (``envelope.malformed``);
2. its nonce is not used at an earlier position (``envelope.replayed``: a replayed envelope
   at a later position is refused, even byte for byte the same);
3. the fact type is known, its key is valid at the position, the signature verifies
   (``fact.unknown_type``, ``key.not_valid``, ``key.rule``, ``signature.invalid``);
4. the actor's idempotency key is not used at an earlier position (``idempotency.conflict``:
   the intake would have answered with the first entry and recorded nothing);
5. a fact the ledger derives (``*.ruling_applied``) comes right after the fact it follows
   from, as the service's ``_derive`` writes it: signed by the ledger principal, with the
   nonce ``sha256("kpi-ledger derived\\n{cause nonce}\\n{n}")[:32]``, the cause's time and
   the data the cause's handler dictates (``ledger.derived_expected``); one that follows no
   such cause is refused (``ledger.derived_only``);
6. the handler of its type: the data's schema and the domain rules, through a ``Context`` at
   the position (``fact.invalid``, ``role.missing``, ``separation.self_approval``, ...);
7. the event goes where the entry was stored: the stream, version and event type the
   handler's ``Recording`` gives must be the entry's (``entry.misplaced``; a new stream that
   exists already: ``stream.conflict``).

The one intake check not replayed is the **time window** (``time.out_of_window``): it bounds
a fact's claimed time by the ledger's clock *at intake*, which the log does not record (the
entry's ``recorded_at`` is written by the same database an insider edits). Deadlines, which
are judged on the fact's own time, are replayed.

An accepted entry's event is applied to the replay's aggregates, so the next entry is judged
on the state the log gives before it; a refused entry changes nothing (the intake would not
have recorded it), so what depends on it is refused too.

Two ways to get the state as of a position:

* from zero, in memory (``replay_log``: an export bundle; ``Admission.refusals(0, n)``);
* from a database, lazily (``Admission``): the state as of ``start`` is read stream by stream
  when a handler first asks for it (``SealedLog.stream_before``: the events of that stream
  sealed before ``start``), the key ring from the key facts before ``start``; the entries
  from ``start`` on are replayed in memory. Consecutive calls (the next ``start`` is the
  previous ``stop``) keep that state; when it holds more than ``cache_size`` aggregates (and
  nothing was refused) it is dropped and read again as of the current position.

What the lazy read trusts: the events before ``start`` (earlier replays checked them), and
``log_entries.nonce`` / ``.idem`` for nonces and idempotency keys used before ``start`` (the
verifier reads nonces from the envelopes themselves, over the whole log).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.utils import get_topic

from domain.context import Derived, LoggedAct, Recording
from domain.errors import (
    IDEMPOTENCY_CONFLICT,
    LEDGER_ONLY,
    Refusal,
    ReplayRefused,
    RuleBroken,
)
from domain.service import (
    DERIVED_TYPES,
    KEY_TOPICS,
    Handler,
    check_signer,
    derived_nonce,
    examine,
    parse_envelope,
    placement,
    record_event,
    standard_handlers,
)
from domain.signed import SignedAggregate
from ledger.checkpoints import Checkpointer
from ledger.home import LEDGER_PRINCIPAL, LedgerHome
from ledger.mapper import EnvelopeMapper
from ledger.store import LogRow, SealedLog, idempotency_token
from signing.canonical import prepare
from signing.entry import Entry, decode_entry
from signing.errors import IntegrityError
from signing.facts import Fact, read_fact
from signing.keyring import KEY_FACT_TYPES, KEY_REGISTERED, KeyRing

#: the problem kind ``kpi-ledger verify --rules`` reports for an entry the intake would refuse
REFUSED = "refused"
# Rule codes of the replay's own checks (the others are the intake's, domain/errors.py).
ENTRY_UNREADABLE = "entry.unreadable"  # the entry's event is missing or its bytes do not parse
MISPLACED = "entry.misplaced"  # stored in another stream, version or event type
STREAM_CONFLICT = "stream.conflict"  # starts a stream that exists already
DERIVED_EXPECTED = "ledger.derived_expected"  # not the derived fact its cause calls for here
CACHE_SIZE = 50_000  # aggregates (or ten times as many nonces) held before a reload
ACT_CACHE = 10_000  # earlier entries kept parsed (the acts appeals cite)
CHUNK = 500  # entries read, parsed and looked up together


@dataclass(frozen=True)
class RefusedEntry:
    """An entry of the log that the intake would have refused at its position."""

    seq: int
    rule: str
    detail: str
    fact_type: str | None = None
    actor: str | None = None

    @classmethod
    def of(cls, seq: int, refusal: Refusal) -> RefusedEntry:
        return cls(seq, refusal.rule, refusal.detail, refusal.fact_type, refusal.actor)

    def describe(self) -> str:
        """``[rule] detail (actor, fact)``, as a refusal reads."""
        who = f" (actor {self.actor!r}, fact {self.fact_type!r})" if self.actor else ""
        return f"the intake would refuse it: [{self.rule}] {self.detail}{who}"


@dataclass(frozen=True)
class _Expected:
    """A fact the ledger must have derived from the entry at ``cause_seq``, next in the log."""

    cause_seq: int
    cause: Fact
    n: int
    derived: Derived


class _AsOf:
    """The ledger's state as of ``position``, offered to handlers as their ``Context.app``.

    Aggregates touched by the entries replayed since ``base`` are in memory; any other
    stream is as it stood at ``base``: read from ``log`` (when ``base`` > 0), else absent.
    """

    def __init__(self, log: SealedLog | None, ledger_principal: str | None) -> None:
        self.log = log
        self.ledger_principal = ledger_principal
        self.working_keyring = KeyRing()
        self.unit_chains: dict[str, list[str]] = {}
        self.position = 0
        self.base = 0
        self.aggregates: dict[UUID, SignedAggregate | None] = {}
        self.nonces: dict[str, int] = {}  # nonce -> position, of entries accepted since base
        self.tokens: dict[str, int] = {}  # idempotency token -> position, likewise
        self.envelopes: dict[int, tuple[UUID, bytes]] = {}  # without a log: accepted entries
        self.acts: OrderedDict[int, LoggedAct] = OrderedDict()
        self.refused: set[int] = set()  # positions since base the replay refused
        self._mapper = EnvelopeMapper()
        # a chunk's nonces and idempotency tokens, looked up before base (None: not there)
        self._nonces_before: dict[str, int | None] = {}
        self._tokens_before: dict[str, int | None] = {}

    def rebase(self, position: int) -> None:
        """Forget what is in memory: from now on, the state before ``position`` is read from
        the log (which holds exactly the entries replayed so far: none was refused)."""
        assert self.log is not None and not self.refused
        self.base = self.position = position
        self.aggregates.clear()
        self.nonces.clear()
        self.tokens.clear()
        self.acts.clear()
        self._nonces_before.clear()
        self._tokens_before.clear()

    def prefetch(self, facts: list[Fact]) -> None:
        """Look up, in one query each, which of the nonces and idempotency tokens of the next
        entries the log holds before ``base`` (the checks of each entry then ask none)."""
        self._nonces_before.clear()
        self._tokens_before.clear()
        if self.log is None or self.base == 0 or not facts:
            return
        nonces = [f.nonce for f in facts]
        tokens = [
            idempotency_token(f.actor, f.idempotency_key)
            for f in facts
            if f.idempotency_key is not None
        ]
        for wanted, found, out in (
            (nonces, self.log.nonce_seqs(nonces), self._nonces_before),
            (tokens, self.log.idempotency_seqs(tokens), self._tokens_before),
        ):
            for key in wanted:
                seq = found.get(key)
                out[key] = seq if seq is not None and seq < self.base else None

    # -- what the handlers read (domain.context.LedgerState) ----------------------------
    @property
    def sealed(self) -> _AsOf:
        return self

    def get_or_none(self, aggregate_id: UUID, pending: dict[UUID, SignedAggregate]) -> Any:
        if aggregate_id in pending:
            return pending[aggregate_id]
        try:
            return self.aggregates[aggregate_id]
        except KeyError:
            pass
        if self.log is None or self.base == 0:
            return None  # nothing before base: the stream does not exist yet
        stored = self.log.stream_before(aggregate_id, self.base)
        found = project_aggregate(None, map(self._mapper.to_domain_event, stored))
        self.aggregates[aggregate_id] = found
        return found

    def logged_act(self, seq: int) -> LoggedAct | None:
        """The entry at ``seq`` if the log held it, accepted, before this position."""
        if not 0 <= seq < self.position or seq in self.refused:
            return None
        act = self.acts.get(seq)
        if act is not None:
            return act
        if self.log is None:
            kept = self.envelopes.get(seq)
            if kept is None:
                return None
            stream, envelope = kept
        else:
            entry = self.log.read_entry(seq)
            if entry is None:
                return None
            stream, envelope = UUID(entry.stream), entry.envelope
        fact = read_fact(envelope, strict=False)
        act = LoggedAct(seq, stream, fact.type, fact)
        self.acts[seq] = act
        while len(self.acts) > ACT_CACHE:
            self.acts.popitem(last=False)
        return act

    def nonce_seq(self, nonce: str) -> int | None:
        """The earlier position that used ``nonce``, or None."""
        seq = self.nonces.get(nonce)
        if seq is not None or self.log is None or self.base == 0:
            return seq
        if nonce in self._nonces_before:
            return self._nonces_before[nonce]
        found = self.log.nonce_seq(nonce)
        return found if found is not None and found < self.base else None

    def token_seq(self, token: str) -> int | None:
        """The earlier position that used this idempotency token, or None."""
        seq = self.tokens.get(token)
        if seq is not None or self.log is None or self.base == 0:
            return seq
        if token in self._tokens_before:
            return self._tokens_before[token]
        found = self.log.idempotency_seqs([token]).get(token)
        return found if found is not None and found < self.base else None


class _Replay:
    """The intake's checks applied to entries one by one, in log order."""

    def __init__(
        self,
        state: _AsOf,
        handlers: Mapping[str, Handler] | None = None,
        *,
        detect_principal: bool = False,
    ) -> None:
        self.state = state
        self.handlers: Mapping[str, Handler] = (
            handlers if handlers is not None else standard_handlers()
        )
        self.expected: deque[_Expected] = deque()
        self.detect_principal = detect_principal

    def check(self, seq: int, raw: bytes | Entry | None) -> tuple[RefusedEntry, ...]:
        """Judge the entry at ``seq`` (its bytes, or None if its event is gone)."""
        return self.judge(seq, self.read(raw))

    def read(self, raw: bytes | Entry | None) -> tuple[Entry, Fact] | Refusal:
        """Step 1: the entry and its fact, parsed as the intake parses an envelope."""
        try:
            entry = self._entry(raw)
        except Refusal as refusal:
            return refusal
        fact = parse_envelope(entry.envelope)
        return fact if isinstance(fact, Refusal) else (entry, fact)

    def judge(self, seq: int, read: tuple[Entry, Fact] | Refusal) -> tuple[RefusedEntry, ...]:
        """The checks of the entry at ``seq`` (``read`` from its bytes) and, if the intake
        would have accepted it, its event applied; else why not. A cause whose derived facts
        should stand here and do not is refused too (before this entry)."""
        state = self.state
        state.position = seq
        unfollowed: tuple[RefusedEntry, ...] = ()
        expected: _Expected | None = None
        try:
            if isinstance(read, Refusal):
                raise read
            entry, fact = read
            if self.expected and fact.type not in DERIVED_TYPES:
                unfollowed = (self.unfollowed(f"a {fact.type}"),)
            earlier = state.nonce_seq(fact.nonce)
            if earlier is not None:
                raise ReplayRefused(
                    f"nonce {fact.nonce} was already used by the entry at position {earlier}",
                    original_seq=earlier,
                    fact_type=fact.type,
                    actor=fact.actor,
                )
            record = check_signer(self.handlers, fact, seq, state.working_keyring)
            token = self._fresh_token(fact)
            expected = self._derivation(fact)
            recording = examine(state, self.handlers, fact, seq, record.admin, {})
            self._check_placement(fact, recording, entry)
        except Refusal as refusal:
            if self.expected and not unfollowed and isinstance(read, Refusal):
                unfollowed = (self.unfollowed("an unreadable entry"),)
            state.refused.add(seq)
            self.expected.clear()  # what a cause still needed is not (all) there
            return (*unfollowed, RefusedEntry.of(seq, refusal))
        self._apply(seq, fact, recording, entry, token)
        if expected is not None:
            self.expected.popleft()
        for n, derived in enumerate(recording.derived):
            self.expected.append(_Expected(seq, fact, n, derived))
        return unfollowed

    def unfollowed(self, instead: str) -> RefusedEntry:
        """The fact waiting for its derived facts is not followed by them (the position holds
        ``instead``): the intake writes them in the same transaction, so it is refused. (Its
        effect stays in the replay's state: only what depends on the rulings is judged
        without them.)"""
        first = self.expected[0]
        cause = first.cause
        self.expected.clear()
        self.state.refused.add(first.cause_seq)
        return RefusedEntry(
            first.cause_seq,
            DERIVED_EXPECTED,
            f"the ledger writes {first.derived.type} right after this fact, at position"
            f" {first.cause_seq + 1 + first.n}; the log holds {instead} there",
            cause.type,
            cause.actor,
        )

    def tail_refusal(self, raws: list[bytes | None]) -> RefusedEntry | None:
        """The entries after a range (``raws``) that the waiting derived facts must be: the
        cause is refused now if they are missing or are no derived facts at all (whether each
        is the right one is judged when it is replayed)."""
        for i in range(len(self.expected)):
            if i >= len(raws):
                return self.unfollowed("nothing: the log ends before it")
            try:
                fact_type: str | None = read_fact(self._entry(raws[i]).envelope).type
            except (Refusal, IntegrityError, ValueError):
                fact_type = None
            if fact_type not in DERIVED_TYPES:
                return self.unfollowed(f"a {fact_type}" if fact_type else "an unreadable entry")
        return None

    # -- the steps -----------------------------------------------------------------------
    @staticmethod
    def _entry(raw: bytes | Entry | None) -> Entry:
        if raw is None:
            raise Refusal("the entry's event is missing", rule=ENTRY_UNREADABLE)
        if isinstance(raw, Entry):
            return raw
        try:
            return decode_entry(raw)
        except (IntegrityError, ValueError) as exc:
            raise Refusal(f"the entry does not parse: {exc}", rule=ENTRY_UNREADABLE) from None

    def _fresh_token(self, fact: Fact) -> str | None:
        if fact.idempotency_key is None:
            return None
        token = idempotency_token(fact.actor, fact.idempotency_key)
        earlier = self.state.token_seq(token)
        if earlier is not None:
            raise RuleBroken(
                f"idempotency key {fact.idempotency_key!r} was used at position {earlier}:"
                " the intake answers a second fact with it by the first, and records nothing",
                rule=IDEMPOTENCY_CONFLICT,
                fact_type=fact.type,
                actor=fact.actor,
            )
        return token

    def _derivation(self, fact: Fact) -> _Expected | None:
        """The derived fact this entry must be (the next one a cause calls for), if any."""
        who = {"fact_type": fact.type, "actor": fact.actor}
        if not self.expected:
            if fact.type in DERIVED_TYPES:
                raise RuleBroken(
                    f"{fact.type} is derived by the ledger and written right after the fact it"
                    " follows from; no fact before this entry calls for it",
                    rule=LEDGER_ONLY,
                    **who,
                )
            return None
        want = self.expected[0]
        nonce = derived_nonce(want.cause.nonce, want.n)
        principal = self.state.ledger_principal
        differences = [
            what
            for what, same in (
                (f"type {want.derived.type}", fact.type == want.derived.type),
                (f"signed by {principal!r}", fact.actor == principal),
                (f"nonce {nonce}", fact.nonce == nonce),
                (f"time {want.cause.time}", fact.time == want.cause.time),
                ("no idempotency key", fact.idempotency_key is None),
                ("the data its cause dictates", fact.data == prepare(want.derived.data)),
            )
            if not same
        ]
        if differences:
            raise RuleBroken(
                f"the ledger writes fact {want.n} derived from the entry at {want.cause_seq}"
                f" ({want.cause.type}) here; this entry is not it: wanted "
                + ", ".join(differences),
                rule=DERIVED_EXPECTED,
                **who,
            )
        return want

    def _check_placement(self, fact: Fact, recording: Recording, entry: Entry) -> None:
        stream, version, event = placement(recording)
        who = {"fact_type": fact.type, "actor": fact.actor}
        if recording.create is not None and self.state.get_or_none(stream, {}) is not None:
            raise Refusal(
                f"the fact starts stream {stream}, which exists already",
                rule=STREAM_CONFLICT,
                **who,
            )
        topic = get_topic(event)
        if (str(stream), version, topic) != (entry.stream, entry.version, entry.type):
            raise Refusal(
                f"the intake records it as {topic} at version {version} of stream {stream};"
                f" the entry says {entry.type} at version {entry.version} of {entry.stream}",
                rule=MISPLACED,
                **who,
            )

    def _apply(
        self, seq: int, fact: Fact, recording: Recording, entry: Entry, token: str | None
    ) -> None:
        state = self.state
        aggregate = record_event(fact, recording)
        aggregate.collect_events()
        state.aggregates[aggregate.id] = aggregate
        if fact.type in KEY_FACT_TYPES:
            state.working_keyring.apply(seq, fact)
            if self.detect_principal and seq == 1 and _registers_ledger(fact):
                state.ledger_principal = LEDGER_PRINCIPAL
        state.nonces[fact.nonce] = seq
        if token is not None:
            state.tokens[token] = seq
        if state.log is None:
            state.envelopes[seq] = (aggregate.id, entry.envelope)


def replay_log(
    rows: Iterable[tuple[int, bytes | None]],
    ledger_principal: str | None = None,
    *,
    detect_principal: bool = True,
) -> Iterator[RefusedEntry]:
    """Replay a whole log from its first entry, in memory (an export bundle): every entry the
    intake would refuse, in order. ``rows`` are ``(position, entry bytes or None)``.

    The ledger principal (who signs derived facts) is ``ledger_principal``, or, with
    ``detect_principal``, the principal ``ledger`` when entry 1 registers its key (what
    ``LedgerService.bootstrap`` writes for a ledger with a key of derived facts).
    Memory grows with the log (its aggregates and, for the acts appeals cite, its envelopes).
    """
    replay = _Replay(_AsOf(None, ledger_principal), detect_principal=detect_principal)
    for seq, raw in rows:
        yield from replay.check(seq, raw)
    missing = replay.tail_refusal([])
    if missing is not None:
        yield missing


class Admission:
    """The rule replay over a database's sealed log, from any position.

    ``first_refusal(start, stop)`` checks the entries ``[start, stop)`` in order against the
    state as of ``start`` and returns the first one the intake would refuse, or None. The
    state is kept between calls: a call whose ``start`` is the previous call's ``stop`` (and
    that found nothing) reads nothing again; another ``start`` reads the state as of that
    position afresh (lazily, stream by stream). After a refusal the state is dropped.

    ``ledger_principal`` signs derived facts (``LedgerHome.facts_key().name``); with
    ``detect_principal`` it is read from the log instead, as ``replay_log`` does.
    """

    def __init__(
        self,
        log: SealedLog,
        ledger_principal: str | None,
        *,
        detect_principal: bool = False,
        handlers: Mapping[str, Handler] | None = None,
        cache_size: int = CACHE_SIZE,
        chunk: int = CHUNK,
    ) -> None:
        self.log = log
        self.chunk = chunk
        self.ledger_principal = ledger_principal
        self.detect_principal = detect_principal
        self.handlers = handlers if handlers is not None else standard_handlers()
        self.cache_size = cache_size
        self._replay: _Replay | None = None
        self._next = 0  # the position the kept state has reached

    def first_refusal(self, start: int, stop: int) -> RefusedEntry | None:
        for refused in self._run(start, stop, stop_at_first=True):
            return refused
        return None

    def refusals(self, start: int, stop: int) -> Iterator[RefusedEntry]:
        """Every entry of ``[start, stop)`` the intake would refuse (refused entries change
        nothing, so the later ones are judged on the log without them)."""
        yield from self._run(start, stop, stop_at_first=False)

    def _run(self, start: int, stop: int, *, stop_at_first: bool) -> Iterator[RefusedEntry]:
        replay = self._replay
        if replay is None or self._next != start:
            replay = self._load(start)
        self._replay = None  # kept again only if the range ends without a refusal
        state = replay.state
        found = False
        for chunk in _chunks(self.log.read_rows(self._next, stop), self.chunk):
            held = len(state.aggregates) + len(state.nonces) // 10
            if held > self.cache_size and not state.refused:
                state.rebase(chunk[0].seq)
            reads = [replay.read(row.entry) for row in chunk]
            state.prefetch([r[1] for r in reads if not isinstance(r, Refusal)])
            for row, read in zip(chunk, reads, strict=True):
                for refused in replay.judge(row.seq, read):
                    found = True
                    yield refused
                    if stop_at_first:
                        return
        waiting = len(replay.expected)  # derived facts the entries after ``stop`` must be
        if waiting:
            tail = [row.entry for row in self.log.read_rows(stop, stop + waiting)]
            missing = replay.tail_refusal(tail)
            if missing is not None:
                yield missing
                return
        if not found:
            self._replay, self._next = replay, stop

    def _load(self, start: int) -> _Replay:
        """The state as of ``start`` (moved back to the fact that caused the derived facts
        ``start`` falls among): the key ring from the key facts before it; aggregates read
        when first asked for."""
        base = start
        while base > 0 and self._derived_at(base):
            base -= 1
        principal = self.ledger_principal
        if self.detect_principal:
            principal = self._principal_in_log() if base > 1 else None
        state = _AsOf(self.log, principal)
        state.base = state.position = base
        for seq, envelope in self.log.topic_entries(KEY_TOPICS, base):
            state.working_keyring.apply(seq, read_fact(envelope, strict=False))
        self._next = base
        return _Replay(state, self.handlers, detect_principal=self.detect_principal)

    def _derived_at(self, seq: int) -> bool:
        try:
            entry = self.log.read_entry(seq)
        except LookupError:
            return False
        if entry is None:
            return False
        try:
            return read_fact(entry.envelope, strict=False).type in DERIVED_TYPES
        except (IntegrityError, ValueError):
            return False

    def _principal_in_log(self) -> str | None:
        try:
            entry = self.log.read_entry(1)
            fact = read_fact(entry.envelope, strict=False) if entry is not None else None
        except (LookupError, IntegrityError, ValueError):
            return None
        return LEDGER_PRINCIPAL if fact is not None and _registers_ledger(fact) else None


def _registers_ledger(fact: Fact) -> bool:
    """Whether ``fact`` registers the key of the principal that signs derived facts."""
    return fact.type == KEY_REGISTERED and fact.data.get("principal") == LEDGER_PRINCIPAL


def _chunks(rows: Iterable[LogRow], size: int) -> Iterator[list[LogRow]]:
    chunk: list[LogRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def sealing_checkpointer(
    log: SealedLog, home: LedgerHome, *, every_entries: int | None = None
) -> Checkpointer:
    """The checkpointer of every command and of the service: it signs with the home's key
    and seals only what the intake would have accepted (this module's rule replay over every
    entry after the last checkpoint, ``Checkpointer.admit``)."""
    facts_key = home.facts_key()
    admission = Admission(log, facts_key.name if facts_key is not None else None)
    return Checkpointer(
        log,
        home.ledger_key(),
        home.state_path,
        every_entries=every_entries,
        admit=admission.first_refusal,
    )
