"""The verifier: one entry point that checks a log against its signed checkpoints.

``verify(source, log_keys)`` reads a log (an export bundle or a database, through the
``LogSource`` protocol) and returns a ``Report`` listing every problem with the first
sequence number it affects and its kind:

``changed``        an entry's bytes differ from what was sealed (payload or metadata);
``deleted``        an entry is missing (a gap, a lost event, or the log shorter than a checkpoint);
``swapped``        two entries exchanged places;
``inserted``       an entry that was never sealed there (forged, replayed, or shifted in);
``forked``         the log no longer extends a signed checkpoint (tail truncated and re-written);
``bad signature``  a signature that does not verify, or a key fact that breaks the key rules;
``revoked key``    a signature by a key revoked before the entry's position;
``bad checkpoint`` a checkpoint note that is malformed or not signed by the log's key.

Trust comes only from the log's verifier keys (given by the inspector, not read from the
source), the signatures, and any ``TrustedRoot`` the caller holds apart from the source
(online: the ledger's signer state, from its home). The leaf hashes a source *claims* are
trusted only for the prefix whose root a signed checkpoint confirms; inside it, a mismatch
names the exact entry.

Signatures are verified in worker processes (all cores by default); the main process applies
the order-dependent rules (sequence, key ring, nonces, tree) as results arrive, in order,
holding only a bounded window of work in memory.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from signing.bundle import ExportSource, Slice, load_slice
from signing.canonical import parse_time
from signing.checkpoint import Checkpoint, SignedCheckpoint, verify_checkpoint
from signing.dsse import pae
from signing.encoding import b64decode_strict
from signing.entry import Entry, decode_entry, decode_entry_fast, encode_entry
from signing.errors import (
    EnvelopeError,
    IntegrityError,
    KeyFactError,
    NoteError,
    RevokedKeyError,
    SignatureError,
    UnknownKeyError,
)
from signing.keyring import KEY_FACT_TYPES, KeyRing
from signing.keys import VerifierKey
from signing.merkle import EMPTY_ROOT, CompactRange, leaf_hash

CHANGED = "changed"
DELETED = "deleted"
SWAPPED = "swapped"
INSERTED = "inserted"
FORKED = "forked"
BAD_SIGNATURE = "bad signature"
REVOKED_KEY = "revoked key"
BAD_CHECKPOINT = "bad checkpoint"
KINDS = (CHANGED, DELETED, SWAPPED, INSERTED, FORKED, BAD_SIGNATURE, REVOKED_KEY, BAD_CHECKPOINT)

CHUNK = 512
MAX_SWAP_SEARCH = 512  # altered entries beyond which swaps are not looked for
ProgressFn = Callable[[int, int], None]
Row = tuple[int, bytes | None, bytes | None]  # position, entry bytes, claimed leaf hash


class LogSource(Protocol):
    """Where the verifier reads a log from (export bundle or database)."""

    def checkpoint_notes(self) -> list[str]: ...

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        """(position, entry bytes or None if lost, the leaf hash stored with it or None)."""
        ...

    def size_hint(self) -> int: ...


@dataclass(frozen=True, order=True)
class Problem:
    seq: int
    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.seq}\t{self.kind}\t{self.detail}"


@dataclass(frozen=True)
class TrustedRoot:
    """A tree size and root the log must extend, trusted as given, not read from the source.

    For what the verifier holds apart from the source, such as the ledger's own record of the
    last checkpoint it signed (``ledger/online.py``); ``label`` names it in problem details.
    """

    origin: str
    size: int
    root: bytes
    label: str


@dataclass
class Report:
    size: int = 0
    checkpoints: list[SignedCheckpoint] = field(default_factory=list)
    trusted: list[TrustedRoot] = field(default_factory=list)  # checked besides the checkpoints
    authenticated_prefix: int = 0
    signatures_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, seq: int, kind: str, detail: str) -> None:
        self.problems.append(Problem(seq, kind, detail))


# ---------------------------------------------------------------------------------------
# Worker side: decode, hash and verify one chunk (pure, picklable results)
# ---------------------------------------------------------------------------------------


class Claim(NamedTuple):
    """What the order-dependent checks need of a fact (its payload's identity and data)."""

    actor: str
    keyid: str
    type: str
    data: dict[str, Any]


class Checked(NamedTuple):
    """A worker's verdict on one entry: small, so it crosses processes cheaply.

    ``entry`` travels back only when the main side needs the bytes (a leaf that differs from
    the stored one, to classify the damage); ``pae``/``sig`` only when the worker did not
    know the key and the main process must check the signature itself.
    """

    row_seq: int
    leaf: bytes | None
    claimed: bytes | None
    entry: bytes | None = None
    error: str | None = None  # entry or envelope unreadable
    entry_seq: int = -1
    recorded_at: str = ""
    claim: Claim | None = None
    nonce: bytes = b""  # 12-byte digest of the envelope's nonce
    signature_ok: bool | None = None  # None: key unknown to the worker
    pae: bytes = b""
    sig: bytes = b""


_worker_keys: dict[str, VerifierKey] = {}
_worker_version = -1


def _learn_key(claim: Claim) -> None:
    public = claim.data.get("public_key")
    if claim.type in KEY_FACT_TYPES and isinstance(public, str):
        try:
            key = VerifierKey.parse(public)
        except ValueError:
            return
        _worker_keys.setdefault(key.keyid, key)


# An envelope as the ledger stores it: canonical JSON with one signature.
_FAST_ENVELOPE = re.compile(
    rb'\{"payload":"([A-Za-z0-9+/]*={0,2})","payloadType":"([^"\\\x00-\x1f]*)",'
    rb'"signatures":\[\{"keyid":"([0-9a-f]{64})","sig":"([A-Za-z0-9+/]*={0,2})"\}\]\}\Z'
)


def _envelope_parts(raw: bytes) -> tuple[bytes, str, list[tuple[str, Any]]]:
    """(payload bytes, payload type, [(keyid, base64 sig)]) of an envelope."""
    match = _FAST_ENVELOPE.match(raw)
    if match is not None:
        body_b64, payload_type, keyid, sig = match.groups()
        body = b64decode_strict(body_b64, "envelope.payload", EnvelopeError)
        return body, payload_type.decode(), [(keyid.decode(), sig.decode())]
    envelope = json.loads(raw)
    if not isinstance(envelope, dict):
        raise EnvelopeError("envelope is not a JSON object")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise EnvelopeError("envelope.payloadType must be a string")
    body = b64decode_strict(envelope.get("payload"), "envelope.payload", EnvelopeError)
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list):
        raise EnvelopeError("envelope.signatures must be a list")
    pairs = [(str(s.get("keyid")), s.get("sig")) for s in signatures if isinstance(s, dict)]
    return body, payload_type, pairs


def _open(data: bytes) -> tuple[Entry, Claim, str, bytes, bytes]:
    """Entry, claim, nonce, PAE and signature of one entry; raises on anything malformed."""
    entry = decode_entry_fast(data)
    body, payload_type, signatures = _envelope_parts(entry.envelope)
    # The signature fixes these bytes: the ledger checked the full schema when it accepted
    # them; here only the fields the checks read must be there, with the right types.
    payload = json.loads(body)
    if (
        not isinstance(payload, dict)
        or not all(isinstance(payload.get(f), str) for f in ("actor", "keyid", "nonce", "type"))
        or not isinstance(payload.get("data"), dict)
    ):
        raise EnvelopeError("payload lacks actor, keyid, nonce, type or data")
    keyid = payload["keyid"]
    for signer, encoded in signatures:
        if signer == keyid:
            sig = b64decode_strict(encoded, "signature", EnvelopeError)
            break
    else:
        raise EnvelopeError(f"no signature by the payload's key {keyid}")
    # Only key facts' data is read by the ordered checks: keep the verdicts small.
    fact_data = payload["data"] if payload["type"] in KEY_FACT_TYPES else {}
    claim = Claim(payload["actor"], keyid, payload["type"], fact_data)
    return entry, claim, payload["nonce"], pae(payload_type, body), sig


def check_chunk(chunk: Sequence[Row], keys: tuple[int, bytes] | None = None) -> list[Checked]:
    """Decode entries, compute leaf hashes, verify signatures with the keys known so far.

    ``keys`` is ``(version, blob)``: the main process's key ring as 32-byte public keys
    concatenated; a worker re-reads it only when the version changed.
    """
    global _worker_version
    if keys is not None and keys[0] != _worker_version:
        _worker_version, blob = keys
        for i in range(0, len(blob), 32):
            key = VerifierKey("k", blob[i : i + 32])
            _worker_keys.setdefault(key.keyid, key)
    out: list[Checked] = []
    for row_seq, data, claimed in chunk:
        if data is None:
            out.append(Checked(row_seq, None, claimed, error="the entry's event is missing"))
            continue
        leaf = leaf_hash(data)
        kept = data if claimed is not None and claimed != leaf else None
        try:
            entry, claim, nonce, message, sig = _open(data)
        except (IntegrityError, ValueError, KeyError, TypeError, RecursionError) as exc:
            out.append(Checked(row_seq, leaf, claimed, data, str(exc)))
            continue
        _learn_key(claim)
        known = _worker_keys.get(claim.keyid)
        digest = hashlib.sha256(nonce.encode()).digest()[:12]
        verdict = None if known is None else known.verify(sig, message)
        # Without the key here, the main process checks the signature: send what it needs.
        message, sig = (message, sig) if verdict is None else (b"", b"")
        out.append(
            Checked(
                row_seq,
                leaf,
                claimed,
                kept,
                None,
                entry.seq,
                entry.recorded_at,
                claim,
                digest,
                verdict,
                message,
                sig,
            )
        )
    return out


# ---------------------------------------------------------------------------------------
# Main side
# ---------------------------------------------------------------------------------------


def _checkpoints(
    notes: Iterable[str], log_keys: Sequence[VerifierKey], report: Report
) -> dict[int, SignedCheckpoint]:
    good: dict[int, SignedCheckpoint] = {}
    for note in notes:
        try:
            signed = verify_checkpoint(note, log_keys)
        except NoteError as exc:
            report.add(0, BAD_CHECKPOINT, f"checkpoint rejected: {exc}")
            continue
        other = good.get(signed.checkpoint.size)
        if other is not None and other.checkpoint.root != signed.checkpoint.root:
            report.add(
                signed.checkpoint.size,
                FORKED,
                f"two signed checkpoints of size {signed.checkpoint.size} disagree",
            )
        good[signed.checkpoint.size] = signed
    return good


def _roots(
    good: dict[int, SignedCheckpoint], trusted: Sequence[TrustedRoot], report: Report
) -> tuple[list[SignedCheckpoint], dict[int, str]]:
    """The checkpoints and trusted roots the log must extend, in size order, and the names
    of the trusted ones (a size that a signed checkpoint also has keeps the signed one)."""
    merged = dict(good)
    labels: dict[int, str] = {}
    for t in trusted:
        other = merged.get(t.size)
        if other is None:
            merged[t.size] = SignedCheckpoint(Checkpoint(t.origin, t.size, t.root), "", None)
            labels[t.size] = t.label
        elif other.checkpoint.root != t.root:
            name = labels.get(t.size, "the signed checkpoint")
            report.add(t.size, FORKED, f"{t.label} and {name} of size {t.size} disagree")
    origins = {s.checkpoint.origin for s in merged.values()}
    if len(origins) > 1:
        report.add(0, BAD_CHECKPOINT, f"checkpoints name several origins: {sorted(origins)}")
    return [merged[size] for size in sorted(merged)], labels


class _Main:
    """Order-dependent checks, fed with worker results in sequence order."""

    def __init__(
        self,
        report: Report,
        checkpoints: list[SignedCheckpoint],
        labels: dict[int, str] | None = None,
    ) -> None:
        self.report = report
        self.labels = labels or {}  # size -> name of a trusted root that is not a signed note
        self.ring = KeyRing()
        self.frontier = CompactRange()  # the tree of the entries as they are now
        # The tree of the leaf hashes stored with them: the same tree until the first entry
        # whose stored hash differs, then a separate frontier from that point on.
        self.claims: CompactRange | None = None
        self.prefix = 0  # the largest checkpoint size whose root the stored hashes reproduce
        self.prefix_open = True
        self.expected = 0
        self.nonces: dict[bytes, int] = {}
        # A checkpoint of size 0 commits to nothing but the empty root.
        for cp in checkpoints:
            if cp.checkpoint.size == 0 and cp.checkpoint.root != EMPTY_ROOT:
                what = self.labels.get(0, "a checkpoint")
                report.add(0, BAD_CHECKPOINT, f"{what} of size 0 with a non-empty root")
        self.pending_checkpoints = deque(cp for cp in checkpoints if cp.checkpoint.size > 0)
        self.last_good_checkpoint = 0
        self.problems: dict[int, Problem] = {}  # one per position: the first (or reclassified)
        self.mismatches: list[Checked] = []
        self.recorded: dict[int, str] = {}

    def flag(self, seq: int, kind: str, detail: str) -> None:
        if seq not in self.problems:
            self.problems[seq] = Problem(seq, kind, detail)

    def feed(self, item: Checked) -> None:
        seq = item.row_seq
        if seq > self.expected:
            self.flag(
                self.expected,
                DELETED,
                f"entries {self.expected}..{seq - 1} are missing (the sequence jumps)",
            )
            for missing in range(self.expected, seq):  # keep positions aligned in the tree
                self._grow(missing, None, None)
        elif seq < self.expected:
            self.flag(seq, INSERTED, f"a second entry claims position {seq}")
            return
        self.expected = seq + 1
        if item.leaf is None:
            self.flag(seq, DELETED, item.error or "entry missing")
            self._grow(seq, None, item.claimed)
            return
        self._grow(seq, item.leaf, item.claimed)
        # The ledger writes each leaf hash with its entry: any difference means tampering.
        leaf_changed = item.claimed is not None and item.claimed != item.leaf
        if leaf_changed:
            self.mismatches.append(item)
        if item.error is not None or item.claim is None:
            if not leaf_changed:
                self.flag(seq, CHANGED, f"entry unreadable: {item.error}")
            return
        if item.entry_seq != seq:
            self.flag(
                seq,
                SWAPPED if not leaf_changed else CHANGED,
                f"entry at position {seq} says it is entry {item.entry_seq}",
            )
        self.recorded[seq] = item.recorded_at
        self._check_fact(seq, item, leaf_changed)

    def _check_fact(self, seq: int, item: Checked, leaf_changed: bool) -> None:
        fact = item.claim
        assert fact is not None
        first = self.nonces.get(item.nonce)
        if first is not None:
            self.flag(seq, INSERTED, f"replays the envelope of entry {first} (same nonce)")
            return
        self.nonces[item.nonce] = seq
        try:
            record = self.ring.signer(seq, fact)
        except RevokedKeyError as exc:
            self.flag(seq, REVOKED_KEY, str(exc))
            return
        except UnknownKeyError as exc:
            self.flag(
                seq,
                CHANGED if leaf_changed else INSERTED,
                f"signed by a key the log never gave this actor: {exc}",
            )
            return
        except KeyFactError as exc:
            self.flag(seq, BAD_SIGNATURE, f"key rule broken: {exc}")
            return
        ok = item.signature_ok
        if ok is None:
            ok = record.key.verify(item.sig, item.pae)
        self.report.signatures_checked += 1
        if not ok:
            if leaf_changed:
                self.flag(seq, CHANGED, "payload altered after signing (signature fails)")
            else:
                self.flag(seq, BAD_SIGNATURE, f"signature by {fact.actor!r} does not verify")
            return
        if fact.type in KEY_FACT_TYPES:
            self.ring.apply(seq, fact)

    def _grow(self, seq: int, leaf: bytes | None, claimed: bytes | None) -> None:
        placeholder = b"\0" * 32
        leaf = leaf if leaf is not None else placeholder
        stored = claimed if claimed is not None else leaf
        if self.claims is None and stored != leaf:
            self.claims = self.frontier.copy()
        if self.claims is not None:
            self.claims.append(stored)
        self.frontier.append(leaf)
        while self.pending_checkpoints and (
            self.pending_checkpoints[0].checkpoint.size == self.frontier.size
        ):
            cp = self.pending_checkpoints.popleft()
            claims_root = (self.claims or self.frontier).root()
            if self.prefix_open and claims_root == cp.checkpoint.root:
                self.prefix = cp.checkpoint.size
            else:
                self.prefix_open = False
            if self.frontier.root() == cp.checkpoint.root:
                self.last_good_checkpoint = cp.checkpoint.size
                self.recorded.clear()  # fork localisation looks only past the last good one
            else:
                self._root_mismatch(cp)

    def _root_mismatch(self, cp: SignedCheckpoint) -> None:
        size = cp.checkpoint.size
        if any(s < size for s in self.problems) or any(m.row_seq < size for m in self.mismatches):
            return  # already explained entry by entry
        start = self.last_good_checkpoint
        first = start
        if cp.timestamp is not None:
            for s in range(start, size):
                at = self.recorded.get(s)
                # Signed at T (whole seconds) means signed before T + 1.
                if at and parse_time(at).timestamp() >= cp.timestamp + 1:
                    first = s
                    break
        name = f"{self.labels.get(size, 'the signed checkpoint')} of size {size}"
        self.flag(
            first,
            FORKED,
            f"the log does not extend {name}: "
            f"entries from {first} were rewritten after it was signed",
        )

    def finish(self) -> None:
        for cp in self.pending_checkpoints:
            size = cp.checkpoint.size
            label = self.labels.get(size)
            signed = (
                f"a checkpoint of size {size} was signed"
                if label is None
                else f"{label} records a checkpoint of size {size}"
            )
            self.flag(
                self.frontier.size,
                DELETED,
                f"the log has {self.frontier.size} entries but {signed}: the tail was truncated",
            )
        self._classify_mismatches()
        self.report.size = self.frontier.size
        self.report.authenticated_prefix = self.prefix
        self.report.problems = sorted(self.report.problems + list(self.problems.values()))

    def _classify_mismatches(self) -> None:
        by_seq = {m.row_seq: m for m in self.mismatches}
        # Pairing is quadratic: past a few hundred altered entries, call each "changed".
        pairable = len(by_seq) <= MAX_SWAP_SEARCH
        decoded = {
            m.row_seq: decode_entry(m.entry)
            for m in self.mismatches
            if m.error is None and m.entry is not None
        }
        done: set[int] = set()
        for m in self.mismatches:
            seq = m.row_seq
            if seq in done:
                continue
            entry = decoded.get(seq)
            partner = self._swap_partner(seq, decoded, by_seq) if pairable else None
            if partner is not None:
                done.update({seq, partner})
                self._replace(seq, SWAPPED, f"swapped with entry {partner}")
                self._replace(partner, SWAPPED, f"swapped with entry {seq}")
                continue
            if entry is not None and self._shifted(entry, m.claimed, +1):
                self._replace(
                    seq, DELETED, f"the entry sealed at {seq} was deleted; later entries moved down"
                )
                done.update(s for s in by_seq if s >= seq)
                continue
            if entry is not None and self._shifted(entry, m.claimed, -1):
                self._replace(
                    seq, INSERTED, f"an entry was inserted at {seq}; later entries moved up"
                )
                done.update(s for s in by_seq if s >= seq)
                continue
            done.add(seq)
            confirmed = " (confirmed by a signed checkpoint)" if seq < self.prefix else ""
            self._replace(seq, CHANGED, f"entry bytes differ from the sealed leaf hash{confirmed}")

    def _replace(self, seq: int, kind: str, detail: str) -> None:
        self.problems[seq] = Problem(seq, kind, detail)

    def _shifted(self, entry: Entry, own_claim: bytes | None, delta: int) -> bool:
        """Was this entry sealed at ``seq + delta`` (its row renumbered, or the log shifted)?"""
        target = entry.seq + delta
        if target < 0:
            return False
        return _leaf_at(target, entry) == own_claim

    def _swap_partner(
        self, seq: int, decoded: dict[int, Entry], by_seq: dict[int, Checked]
    ) -> int | None:
        """The position whose entry this one exchanged places with, if the claims show one.

        Two ways to exchange entries in the database, each reproducing both claimed hashes
        once undone: the event links exchanged (each position keeps its own recorded time and
        claim: ``here`` and ``there``), or the whole rows exchanged, ``seq`` values swapped
        (each entry carries its time and its claim along: it was sealed at the other's place).
        """
        entry = decoded.get(seq)
        if entry is None:
            return None
        claim = by_seq[seq].claimed
        for other_seq, o in decoded.items():
            if other_seq == seq:
                continue
            other_claim = by_seq[other_seq].claimed
            if _leaf_at(other_seq, entry) == claim and _leaf_at(seq, o) == other_claim:
                return other_seq  # whole rows
            here = encode_entry(seq, o.stream, o.version, o.type, entry.recorded_at, o.envelope)
            if leaf_hash(here) != claim:
                continue
            there = encode_entry(
                other_seq, entry.stream, entry.version, entry.type, o.recorded_at, entry.envelope
            )
            if leaf_hash(there) == other_claim:
                return other_seq  # event links
        return None


def _leaf_at(seq: int, entry: Entry) -> bytes:
    """The leaf hash ``entry`` would have had, sealed at ``seq``."""
    return leaf_hash(
        encode_entry(
            seq, entry.stream, entry.version, entry.type, entry.recorded_at, entry.envelope
        )
    )


def _chunks(entries: Iterator[Row]) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for item in entries:
        chunk.append(item)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def verify(
    source: LogSource,
    log_keys: Sequence[VerifierKey],
    *,
    trusted: Sequence[TrustedRoot] = (),
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> Report:
    """Check everything; ``report.ok`` only when every entry and checkpoint holds.

    ``trusted``: roots the log must extend besides its signed checkpoints, such as the
    ledger's signer state (reported like checkpoints, and named by their labels).
    """
    report = Report()
    signed = _checkpoints(source.checkpoint_notes(), log_keys, report)
    report.checkpoints = [signed[size] for size in sorted(signed)]
    report.trusted = list(trusted)
    checkpoints, labels = _roots(signed, trusted, report)
    main = _Main(report, checkpoints, labels)
    total = source.size_hint()
    done = 0
    workers = workers if workers is not None else (os.cpu_count() or 1)
    for checked in _run(source, main, workers):
        for item in checked:
            main.feed(item)
        done += len(checked)
        if progress:
            progress(done, total)
    main.finish()
    return report


def check_slice(part: Slice, keys: tuple[int, bytes] | None = None) -> list[Checked]:
    """A worker loads a slice of an export bundle itself, then checks it."""
    return check_chunk(load_slice(part), keys)


def _tasks(source: LogSource) -> Iterator[tuple[Callable[..., list[Checked]], Any]]:
    if isinstance(source, ExportSource):
        for part in source.slices(CHUNK):
            yield check_slice, part
    else:
        for chunk in _chunks(source.entries()):
            yield check_chunk, chunk


def _run(source: LogSource, main: _Main, workers: int) -> Iterator[list[Checked]]:
    if workers <= 1:
        for function, task in _tasks(source):
            yield function(task)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        window: deque[Any] = deque()
        keys: tuple[int, bytes] = (0, b"")
        for function, task in _tasks(source):
            if len(main.ring.keys) != keys[0]:
                blob = b"".join(r.key.public_raw for r in main.ring.keys.values())
                keys = (len(main.ring.keys), blob)
            window.append(pool.apply_async(function, (task, keys)))
            if len(window) >= workers * 3:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


__all__ = ["KINDS", "LogSource", "Problem", "Report", "SignatureError", "TrustedRoot", "verify"]
