"""The rule replay (``domain/admission.py``): would the intake have accepted each entry?

Insiders add well-formed rows behind the service, with raw SQL: the event row, its log row
with the right leaf hash, and the Merkle nodes it completes, so the log stays consistent and
the signatures verify. The verifier cannot see what is wrong with some of them (a
self-approval signed with a registered key, a fact in another stream); the replay names each
one at its position with the intake's rule — from a lazy as-of load, incrementally, from zero
and offline — and ``kpi-ledger verify`` reports it and exits 1. Clean histories, with appeals
and the rulings the ledger derives from them, replay with no refusal from any position.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import Ledger
from eventsourcing.utils import get_topic

from api.cli import main
from domain.admission import (
    DERIVED_EXPECTED,
    MISPLACED,
    Admission,
    RefusedEntry,
    replay_log,
)
from domain.attestations import Attestation
from domain.service import LedgerService, TimeWindow, examine, placement
from domain.work import WorkItem
from ledger.config import parse_database
from ledger.export import export_bundle
from ledger.home import LedgerHome
from ledger.online import DatabaseSource
from ledger.sealer import recorded_now
from signing.checkpoint import log_verifier_keys
from signing.entry import decode_entry, encode_entry
from signing.facts import read_fact, sign_fact
from signing.keys import SigningKey
from signing.merkle import leaf_hash
from signing.verify import verify
from tests.domain.world import LAN, MARCH, World, assignment, at, sha

ITEMS = [f"lan-{i:02d}" for i in range(1, 7)]  # March's
APRIL = "lan-07"  # declared in April, not yet judged


@dataclass
class History:
    """A small month of Lan's with a close, a decided appeal (two derived rulings) and a
    second appeal assigned but not decided; an April item declared, not yet judged."""

    world: World
    insider: Ledger
    rejected: int  # the rejection of lan-01, overturned on appeal ap-1
    decided: int  # ap-1's decision; its two rulings follow it
    declared_04: int  # Lan's declaration of lan-04
    pending_appeal: dict[str, Any]  # ap-2 (against the rejection of lan-06), assigned

    @property
    def log(self) -> Any:
        return self.world.service.sealed

    def size(self) -> int:
        return int(self.log.log_size())

    def rows(self) -> Iterator[tuple[int, bytes | None]]:
        return ((r.seq, r.entry) for r in self.log.read_rows())


def build(db_url: str, tmp_path: Path) -> History:
    w = World(db_url)
    w.organise()
    w.employ(LAN)
    w.now = at("2026-03-02")
    for item in ITEMS:
        w.do("tuan.sup", "work.assigned", assignment(item))
    w.now = at("2026-03-21")
    declared = {
        item: w.do(LAN, "work.declared", {"item": item, "done_at": "2026-03-20T03:00:00Z"})
        for item in ITEMS
    }
    rejected = w.do("tuan.sup", "work.rejected", {"item": "lan-01", "reason": "thiếu hồ sơ"})
    rejected_06 = w.do("tuan.sup", "work.rejected", {"item": "lan-06", "reason": "thiếu hồ sơ"})
    for item in ("lan-02", "lan-03"):
        w.do("tuan.sup", "work.approved", {"item": item})
    delayed = w.do("tuan.sup", "work.delayed", {"item": "lan-03", "days": 1, "reason": "muộn"})
    w.now = at("2026-04-02")
    w.do("hoa.hr", "period.closed", {"agency": "KH-W1", "period": MARCH, "snapshot": sha("m")})
    w.now = at("2026-04-03")
    w.do("tuan.sup", "work.assigned", assignment(APRIL, period="2026-04"))
    w.now = at("2026-04-05")
    w.do(LAN, "work.declared", {"item": APRIL, "done_at": "2026-04-04T03:00:00Z"})
    contested = [rejected.seq, delayed.seq]
    w.do(LAN, "appeal.filed", {"appeal": "ap-1", "contested": contested, "grounds": "g"})
    w.do("hoa.hr", "appeal.assigned", {"appeal": "ap-1", "appellant": LAN, "reviewer": "an.rev"})
    w.now = at("2026-04-06")
    rulings = [
        {"act": rejected.seq, "ruling": "overturned", "reason": "hồ sơ đã đủ"},
        {"act": delayed.seq, "ruling": "exempted", "reason": "ngập lụt"},
    ]
    decided = w.do(
        "an.rev",
        "appeal.decided",
        {"appeal": "ap-1", "appellant": LAN, "rulings": rulings, "reasons": "có cơ sở"},
    )
    assert len(decided.derived) == 2
    w.do(LAN, "appeal.filed", {"appeal": "ap-2", "contested": [rejected_06.seq], "grounds": "g"})
    w.do("hoa.hr", "appeal.assigned", {"appeal": "ap-2", "appellant": LAN, "reviewer": "an.rev"})
    pending = {
        "appeal": "ap-2",
        "appellant": LAN,
        "rulings": [{"act": rejected_06.seq, "ruling": "overturned", "reason": "đủ"}],
        "reasons": "có cơ sở",
    }
    insider = Ledger(w.service.database, LedgerHome(tmp_path / "unused"), w.service, w.admin)
    return History(w, insider, rejected.seq, decided.seq, declared["lan-04"].seq, pending)


@pytest.fixture
def h(db_url: str, tmp_path: Path) -> Iterator[History]:
    history = build(db_url, tmp_path)
    yield history
    history.world.service.close()


# -- the insider's tools ---------------------------------------------------------------------


def forge(
    h: History, envelope: bytes, stream: UUID, version: int, topic: str, *, nonce: bool = True
) -> int:
    """Append a row at the end of the log as an insider could: the event, its log row with
    the right leaf hash and the Merkle nodes it completes (the nonce column left empty for a
    replayed envelope, whose nonce the column already holds)."""
    log = h.log
    seq = h.size()
    sqlite = h.world.service.database.backend == "sqlite"
    h.insider.sql(
        f"INSERT INTO {h.insider.events} (originator_id, originator_version, topic, state)"
        " VALUES (%s, %s, %s, %s)",
        (stream.hex if sqlite else str(stream), version, topic, envelope),
    )
    nid = int(h.insider.sql(f"SELECT MAX({h.insider.event_key()}) FROM {h.insider.events}")[0][0])
    recorded = recorded_now()
    leaf = leaf_hash(encode_entry(seq, str(stream), version, topic, recorded, envelope))
    nodes = log.frontier(seq).append(leaf)
    h.insider.sql(
        "INSERT INTO log_entries (seq, notification_id, recorded_at, leaf_hash, nonce)"
        " VALUES (%s, %s, %s, %s, %s)",
        (seq, nid, recorded, leaf, read_fact(envelope).nonce if nonce else None),
    )
    for level, idx, node in nodes:
        h.insider.sql(
            "INSERT INTO log_nodes (level, idx, hash) VALUES (%s, %s, %s)", (level, idx, node)
        )
    return seq


def where_intake_puts(h: History, envelope: bytes) -> tuple[UUID, int, str, Any]:
    """The stream, version and event type the intake would record ``envelope`` with now
    (through the service's own checks), and the recording."""
    service = h.world.service
    fact = read_fact(envelope)
    size = h.size()
    record = service._check(fact, size, service.keyring)
    recording = examine(service, service.handlers, fact, size, record.admin, {})
    stream, version, event = placement(recording)
    return stream, version, get_topic(event), recording


def next_version(h: History, stream: UUID) -> int:
    return int(h.world.get(stream).version) + 1


def approval(h: History, who: str, item: str) -> bytes:
    return h.world.sign(who, "work.approved", {"item": item})


# -- the attacks ----------------------------------------------------------------------------
Attack = Callable[[History], tuple[int, str]]  # forges rows; (the refused position, the rule)


def self_approval(h: History) -> tuple[int, str]:
    """Lan approves her own declaration, signed with her registered key, fresh nonce."""
    stream = WorkItem.id_for(APRIL)
    envelope = approval(h, LAN, APRIL)
    seq = forge(h, envelope, stream, next_version(h, stream), get_topic(WorkItem.Approved))
    return seq, "separation.self_approval"


def unknown_key(h: History) -> tuple[int, str]:
    """An attestation in Lan's name with a key the log never registered."""
    envelope = sign_fact(SigningKey.generate(LAN), "document.attested", {"sha256": "ee" * 32})
    raw = envelope.to_bytes()
    stream = Attestation.id_for(read_fact(raw))
    return forge(h, raw, stream, 1, get_topic(Attestation.Attested)), "key.not_valid"


def replayed_envelope(h: History) -> tuple[int, str]:
    """Lan's declaration of lan-04 again, at the end, as the next event of its stream."""
    entry = h.world.entry(h.declared_04)
    stream = UUID(entry.stream)
    seq = forge(h, entry.envelope, stream, next_version(h, stream), entry.type, nonce=False)
    return seq, "envelope.replayed"


def wrong_stream(h: History) -> tuple[int, str]:
    """Tuan's valid approval of the April item, stored as an event of lan-02's stream."""
    envelope = approval(h, "tuan.sup", APRIL)
    _, _, topic, _ = where_intake_puts(h, envelope)
    other = WorkItem.id_for("lan-02")
    return forge(h, envelope, other, next_version(h, other), topic), MISPLACED


def wrong_version(h: History) -> tuple[int, str]:
    """Tuan's valid approval of the April item, in its stream but a version too far."""
    envelope = approval(h, "tuan.sup", APRIL)
    stream, version, topic, _ = where_intake_puts(h, envelope)
    return forge(h, envelope, stream, version + 1, topic), MISPLACED


def wrong_event(h: History) -> tuple[int, str]:
    """Tuan's valid approval of the April item, stored as a rejection event."""
    envelope = approval(h, "tuan.sup", APRIL)
    stream, version, _, _ = where_intake_puts(h, envelope)
    return forge(h, envelope, stream, version, get_topic(WorkItem.Rejected)), MISPLACED


def ruling_without_cause(h: History) -> tuple[int, str]:
    """A ruling signed with the ledger's own key, fresh nonce, that no decision calls for."""
    ruling = h.world.fact_at(h.decided + 1)
    signer = h.world.ledger_signer
    envelope = sign_fact(signer, ruling.type, ruling.data, time=ruling.time).to_bytes()
    stream = WorkItem.id_for("lan-01")
    seq = forge(h, envelope, stream, next_version(h, stream), get_topic(WorkItem.RulingApplied))
    return seq, "ledger.derived_only"


def decision_without_its_ruling(h: History) -> tuple[int, str]:
    """An. Rev's decision of ap-2, well placed, but without the ruling the ledger derives."""
    envelope = h.world.sign("an.rev", "appeal.decided", h.pending_appeal)
    stream, version, topic, recording = where_intake_puts(h, envelope)
    assert len(recording.derived) == 1
    return forge(h, envelope, stream, version, topic), DERIVED_EXPECTED


def decision_with_a_made_up_ruling(h: History) -> tuple[int, str]:
    """The decision of ap-2, then its ruling signed by the ledger's key with another nonce."""
    envelope = h.world.sign("an.rev", "appeal.decided", h.pending_appeal)
    stream, version, topic, recording = where_intake_puts(h, envelope)
    forge(h, envelope, stream, version, topic)
    derived = recording.derived[0]
    ruling = sign_fact(
        h.world.ledger_signer, derived.type, derived.data, time=read_fact(envelope).time
    ).to_bytes()
    item = WorkItem.id_for("lan-06")
    seq = forge(h, ruling, item, next_version(h, item), get_topic(WorkItem.RulingApplied))
    return seq, DERIVED_EXPECTED


ATTACKS: dict[str, Attack] = {
    "self-approval": self_approval,
    "unknown-key": unknown_key,
    "replayed-envelope": replayed_envelope,
    "wrong-stream": wrong_stream,
    "wrong-version": wrong_version,
    "wrong-event": wrong_event,
    "ruling-without-cause": ruling_without_cause,
    "decision-without-ruling": decision_without_its_ruling,
    "made-up-ruling": decision_with_a_made_up_ruling,
}
# what the integrity checks alone cannot see: the rows are well signed and well sealed
INVISIBLE_TO_THE_VERIFIER = {
    "self-approval",
    "wrong-stream",
    "wrong-version",
    "wrong-event",
    "ruling-without-cause",
    "decision-without-ruling",
    "made-up-ruling",
}


def cli_verify(h: History, tmp_path: Path, *extra: str) -> int:
    vkey = tmp_path / "log.vkey"
    vkey.write_text("".join(k.to_text() + "\n" for k in log_verifier_keys(h.world.log_key)))
    url = h.world.service.database.url
    home = str(tmp_path / "no-home")
    return main(["verify", *extra, "--db", url, "--home", home, "--log-key", str(vkey)])


# -- the tests ------------------------------------------------------------------------------


def test_a_clean_history_replays_with_no_refusal(
    h: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, n = h.log, h.size()
    types = [h.world.fact_at(s).type for s in range(n)]
    assert types[h.decided + 1 : h.decided + 3] == ["work.ruling_applied"] * 2
    assert Admission(log, "ledger").first_refusal(0, n) is None
    assert list(Admission(log, "ledger").refusals(0, n)) == []
    assert list(Admission(log, None, detect_principal=True).refusals(0, n)) == []
    assert list(replay_log(h.rows())) == []
    # holding few aggregates: the state is dropped and read again as of later positions
    reads: list[UUID] = []
    stream_before = log.stream_before
    monkeypatch.setattr(log, "stream_before", lambda s, b: reads.append(s) or stream_before(s, b))
    assert Admission(log, "ledger", cache_size=5, chunk=4).first_refusal(0, n) is None
    assert reads  # (from zero, nothing is read unless the state was dropped)
    monkeypatch.undo()
    # from every position, with the state as of it read lazily (start may fall between a
    # decision and its rulings: the replay starts at the decision)
    for start in range(n):
        assert Admission(log, "ledger").first_refusal(start, n) is None, start
    # one entry per call, as a checkpointer would: the state is read once, then kept
    admission = Admission(log, "ledger")
    loads: list[int] = []
    topic_entries = log.topic_entries

    def counted(topics: Any, before: int) -> Any:
        loads.append(before)
        return topic_entries(topics, before)

    monkeypatch.setattr(log, "topic_entries", counted)
    assert admission.first_refusal(3, 4) is None
    for start in range(4, n):
        assert admission.first_refusal(start, start + 1) is None, start
    assert admission.first_refusal(n, n) is None
    assert loads == [3]
    assert admission.first_refusal(5, n) is None  # another start: read again
    assert loads == [3, 5]


def test_the_intake_refactor_still_checks_what_it_did(h: History) -> None:
    """The service's own intake, now sharing its checks with the replay, still refuses the
    same facts (and the replay agrees on the rule)."""
    w = h.world
    w.refused(LAN, "work.approved", {"item": APRIL}, "separation.self_approval")
    size = h.size()  # the same envelope again is answered with its entry, recorded once
    again = w.service.submit(w.entry(h.declared_04).envelope)
    assert again.duplicate and again.seq == h.declared_04 and h.size() == size
    w.refused_raw(
        sign_fact(SigningKey.generate(LAN), "document.attested", {"sha256": "ee" * 32}).to_bytes(),
        "key.not_valid",
    )
    w.refused("hoa.hr", "work.ruling_applied", w.fact_at(h.decided + 1).data, "ledger.derived_only")
    w.verify()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_insider_row_is_refused_at_its_position(
    h: History, attack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = h.size()
    warm = Admission(h.log, "ledger")
    assert warm.first_refusal(0, before) is None
    seq, rule = ATTACKS[attack](h)
    after = h.size()
    assert before <= seq < after

    def named(found: RefusedEntry | None) -> None:
        assert found is not None, attack
        assert (found.seq, found.rule) == (seq, rule), found

    named(warm.first_refusal(before, after))  # incremental: the state kept from the last call
    named(Admission(h.log, "ledger").first_refusal(before, after))  # as of `before`, lazily
    named(Admission(h.log, "ledger").first_refusal(0, after))  # from zero
    named(Admission(h.log, "ledger", cache_size=5, chunk=4).first_refusal(0, after))  # reloads
    offline = list(replay_log(h.rows()))
    assert [(r.seq, r.rule) for r in offline] == [(seq, rule)]
    refused = Admission(h.log, "ledger").refusals(0, after)
    assert [(r.seq, r.rule) for r in refused] == [(seq, rule)]

    # a legitimate write after it: the forged rows kept the log consistent, and the replay
    # names only the forged entry (the rest is judged on the log without it)
    h.world.do("binh.insp", "document.attested", {"sha256": "ab" * 32})
    assert [r.seq for r in Admission(h.log, "ledger").refusals(0, h.size())] == [seq]

    capsys.readouterr()
    assert cli_verify(h, tmp_path) == 1
    out = capsys.readouterr().out
    assert f"\n{seq}\trefused\tthe intake would refuse it: [{rule}]" in out, out
    assert "1 the intake would refuse" in out
    report = verify(DatabaseSource(h.log), [], workers=1)
    if attack in INVISIBLE_TO_THE_VERIFIER:
        assert report.ok, report.problems
        assert cli_verify(h, tmp_path, "--no-rules") == 0
    else:
        assert [p.seq for p in report.problems] == [seq]


def test_a_bundle_is_replayed_on_request(
    h: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq, rule = self_approval(h)
    vkey = tmp_path / "log.vkey"
    vkey.write_text("".join(k.to_text() + "\n" for k in log_verifier_keys(h.world.log_key)))
    bundle = tmp_path / "bundle"
    export_bundle(h.log, bundle)
    capsys.readouterr()
    assert main(["verify", str(bundle), "--log-key", str(vkey)]) == 0  # integrity only
    assert "rules replayed" not in capsys.readouterr().out
    assert main(["verify", str(bundle), "--log-key", str(vkey), "--rules"]) == 1
    out = capsys.readouterr().out
    assert f"\n{seq}\trefused\tthe intake would refuse it: [{rule}]" in out, out


def test_the_time_window_is_not_replayed(h: History) -> None:
    """A fact the intake took with its clock far behind (an import: no backdating bound)
    replays: the window is a setting of the intake, relative to its clock then."""
    w = h.world
    w.service.window = TimeWindow(past=dt.timedelta(hours=1))
    w.now = at("2026-05-01")
    w.refused_raw(
        w.sign("binh.insp", "document.attested", {"sha256": "cd" * 32}, time=at("2026-04-01")),
        "time.out_of_window",
    )
    w.service.window = TimeWindow(past=None)
    w.do("binh.insp", "document.attested", {"sha256": "cd" * 32}, time=at("2026-04-01"))
    assert list(replay_log(h.rows())) == []


def test_the_demo_replays_with_no_refusal(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A property of the intake: every entry of a log it wrote passes the replay, whole and
    from any position, on the database and from a bundle."""
    home = str(tmp_path / "home")
    demo = ["demo", "--employees", "12", "--months", "2", "--db", db_url, "--home", home]
    assert main(demo) == 0
    capsys.readouterr()
    assert main(["verify", "--db", db_url, "--home", home]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and ": 0 the intake would refuse" in out, out
    assert main(["export", str(tmp_path / "bundle"), "--db", db_url, "--home", home]) == 0
    vkey = str(tmp_path / "home" / "log.vkey")
    assert main(["verify", str(tmp_path / "bundle"), "--log-key", vkey, "--rules"]) == 0

    service = LedgerService(parse_database(db_url))
    try:
        log = service.sealed
        n = log.log_size()
        rulings = [
            r.seq
            for r in log.read_rows()
            if r.entry is not None
            and read_fact(decode_entry(r.entry).envelope).type.endswith(".ruling_applied")
        ]
        assert rulings, "the demo decides appeals: the ledger derives rulings"
        admission = Admission(log, "ledger")
        for start in range(0, n, 97):  # incrementally, in steps
            assert admission.first_refusal(start, min(n, start + 97)) is None, start
        for start in [1, n // 2, n - 1, *rulings]:  # from a position, read lazily
            assert Admission(log, "ledger").first_refusal(start, n) is None, start
    finally:
        service.close()
