"""Several processes appending at once: sequence numbers stay gap-free, in commit order, and
the log verifies — on SQLite (one file) and on PostgreSQL (one database)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import TYPE_CHECKING

from domain.service import LedgerService
from ledger.online import DatabaseSource
from signing.facts import sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey
from signing.verify import verify

if TYPE_CHECKING:  # the writers import this module in fresh processes: no conftest there
    from conftest import Ledger

WRITERS = 3
BATCHES = 15
PER_BATCH = 8


def _writer(url: str, key_text: str, tag: int) -> None:
    from ledger.config import parse_database

    key = SigningKey.parse(key_text)
    service = LedgerService(parse_database(url))
    try:
        for b in range(BATCHES):
            envelopes = [
                sign_fact(
                    key, "document.attested", {"sha256": f"{tag:08x}{b:08x}{i:048x}"}
                ).to_bytes()
                for i in range(PER_BATCH)
            ]
            outcomes = service.submit_many(envelopes)
            assert all(hasattr(o, "seq") for o in outcomes), outcomes
    finally:
        service.close()


def test_concurrent_writers_keep_the_sequence_gap_free(ledger: Ledger, tmp_path: Path) -> None:
    keys = []
    for n in range(WRITERS):
        key = SigningKey.generate(f"system-{n}")
        ledger.service.submit(
            key_registration(ledger.admin, key.verifier(), admin=False).to_bytes()
        )
        keys.append(key)
    start = ledger.service.sealed.log_size()
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_writer, args=(ledger.database.url, key.to_text(), n))
        for n, key in enumerate(keys)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = list(ledger.service.sealed.read_rows())
    assert len(rows) == start + WRITERS * BATCHES * PER_BATCH
    assert [r.seq for r in rows] == list(range(len(rows)))  # gap-free
    ids = [r.notification_id for r in rows]
    assert ids == sorted(ids)  # sequence order is commit (notification) order
    report = verify(DatabaseSource(ledger.service.sealed), [], workers=1)
    assert report.ok, report.problems[:5]
    assert report.signatures_checked == len(rows)
