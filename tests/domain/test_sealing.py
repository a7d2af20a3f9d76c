"""Nothing forged gets sealed: the checkpointer replays the intake over every new entry.

The insider rows of ``test_admission.py`` (well signed, well sealed: a self-approval, a key
never registered, a replayed envelope, facts in the wrong stream, version or event, rulings
without or with a made-up cause), each added after the last checkpoint and followed by a
legitimate write. The checkpointer seals the log up to the forged entry and no further, says
which entry and which rule, and keeps refusing — on demand, and as the service's periodic
job, whose ``refusing`` alarm ``/v1/status`` shows — until an operator acts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import Runtime, Settings
from domain.admission import Admission
from ledger.checkpoints import Checkpointer, SealRefused
from ledger.home import LedgerHome
from tests.domain.test_admission import ATTACKS, History, build
from tests.waiting import eventually


@pytest.fixture
def h(db_url: str, tmp_path: Path) -> Iterator[History]:
    history = build(db_url, tmp_path)
    yield history
    history.world.service.close()


def _eventually(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    return eventually(condition, seconds)


def _sealed(h: History) -> int:
    latest = h.log.latest_checkpoint()
    return latest.size if latest is not None else 0


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_checkpointer_seals_up_to_an_insider_row_and_no_further(
    h: History, attack: str, tmp_path: Path
) -> None:
    admission = Admission(h.log, "ledger")
    state = tmp_path / "state.json"
    cp = Checkpointer(h.log, h.world.log_key, state, admit=admission.first_refusal)
    assert cp.checkpoint().checkpoint.size == h.size()  # the clean history is sealed
    seq, rule = ATTACKS[attack](h)
    h.world.do("binh.insp", "document.attested", {"sha256": "ab" * 32})  # a legitimate write
    for _ in range(2):  # asked again, the same answer: nothing from the forged entry on
        with pytest.raises(SealRefused) as caught:
            cp.checkpoint()
        assert caught.value.seq == seq and f"[{rule}]" in str(caught.value), caught.value
        assert _sealed(h) == seq
    job = cp.run_every(0.05)
    try:
        assert _eventually(lambda: job.health().state == "refusing")
        detail = job.health().detail or ""
        assert f"entry {seq} would be refused by the intake" in detail and rule in detail
        assert job.alive and _sealed(h) == seq
    finally:
        cp.stop()


def test_the_service_raises_the_alarm_in_its_status(
    h: History, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = LedgerHome(tmp_path / "home")
    home.create("kpi.test/sealing", facts_key=h.world.ledger_signer)
    settings = Settings(h.world.service.database, home, checkpoint_seconds=0.05)
    app = create_app(settings, runtime=lambda s: Runtime.open(s, service=h.world.service))
    principal = "binh.insp"
    with TestClient(app) as client:
        rt: Runtime = app.state.runtime
        token = rt.principals.issue(principal)
        auth = {"Authorization": f"Bearer {token}"}

        def status() -> dict[str, object]:
            answer: dict[str, object] = client.get("/v1/status", headers=auth).json()
            return answer

        assert _eventually(lambda: status()["checkpointer"] == "ok")
        size = h.size()
        assert _eventually(lambda: status()["checkpoint_size"] == size)
        seq, rule = ATTACKS["self-approval"](h)
        assert _eventually(lambda: str(status()["checkpointer"]).startswith("refusing since "))
        words = str(status()["checkpointer"])
        assert f"entry {seq} would be refused by the intake" in words and rule in words
        assert status()["checkpoint_size"] == seq  # nothing from it on is sealed
        ready = client.get("/v1/ready")  # still serving truthfully: ready, with the alarm
        assert ready.status_code == 200
        assert ready.json()["jobs"]["checkpointer"].startswith("refusing since ")
    assert any("ALARM" in r.getMessage() and str(seq) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("attack", ["self-approval", "unknown-key", "wrong-stream"])
def test_the_command_line_checkpointer_refuses_too(
    h: History, attack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kpi-ledger checkpoint`` (and so ``--every-seconds`` and ``append --checkpoint-every``,
    which build the same checkpointer) seals the log up to the forged entry and exits 1."""
    from api.cli import main

    home = LedgerHome(tmp_path / "home")
    home.create("kpi.test/sealing", facts_key=h.world.ledger_signer)
    url = h.world.service.database.url
    assert main(["checkpoint", "--db", url, "--home", str(home.path)]) == 0
    seq, rule = ATTACKS[attack](h)
    h.world.do("binh.insp", "document.attested", {"sha256": "ab" * 32})
    capsys.readouterr()
    assert main(["checkpoint", "--db", url, "--home", str(home.path)]) == 1
    err = capsys.readouterr().err
    assert f"entry {seq} would be refused by the intake" in err and rule in err, err
    assert _sealed(h) == seq
