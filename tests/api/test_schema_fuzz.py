"""Schemathesis against the served OpenAPI document: for every operation, generated requests
(valid and invalid) never get a 5xx, and every answer matches the schema it documents.

The service runs for real (``kpi-ledger serve`` in its own process, SQLite) over the standard
world with a month of Lan's work, and the requests carry the inspector's token, so that the
read paths reach the views and the log rather than stopping at authentication.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.principals import Principals
from ledger.checkpoints import Checkpointer
from tests.api.test_end_to_end import _home, serving
from tests.domain.test_scenarios import ordinary_month
from tests.domain.world import LAN, World

INSPECTOR = "binh.insp"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{folder / 'ledger.db'}"
    w = World(url)
    w.organise()
    w.employ(LAN)
    ordinary_month(w)
    token = Principals(w.service.sealed.datastore).issue(INSPECTOR)  # type: ignore[attr-defined]
    home = _home(w, folder / "home-keys")
    Checkpointer(w.service.sealed, w.log_key, home / "signer-state.json").checkpoint()
    w.service.close()
    with serving(url, home) as base:
        yield base, token


CHECKS = [not_a_server_error, response_schema_conformance]


def test_no_server_error_and_answers_match_the_schema(served: tuple[str, str]) -> None:
    """Each operation of the served document, with Hypothesis-generated cases (schemathesis's
    strategies, driven here rather than through its pytest plugin)."""
    base, token = served
    headers = {"Authorization": f"Bearer {token}"}
    api = schemathesis.openapi.from_url(f"{base}/v1/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,  # the same cases on every run (CI must not flake); explore locally
            # with more examples and random seeds by editing these two lines
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            if case.path == "/v1/feed":  # it follows the log: one entry that exists, then end
                case.query = {**(case.query or {}), "from": 0, "limit": 1}
                case.headers = {
                    k: v for k, v in (case.headers or {}).items() if k.lower() != "last-event-id"
                }
            case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)

        check()
