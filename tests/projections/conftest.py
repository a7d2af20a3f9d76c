"""Fixtures of the projection tests: a world with Lan employed, and the projection over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.config import parse_database
from projections.engine import Evaluations
from projections.runners import close_view, open_view
from tests.domain.world import LAN, World


@pytest.fixture
def w(db_url: str) -> Iterator[World]:
    """The standard organisation with Lan employed in its one-stop section (as in
    ``tests/domain/test_scenarios.py``)."""
    world = World(db_url)
    world.organise()
    world.employ(LAN)
    yield world
    world.service.close()


@pytest.fixture
def ev(db_url: str, w: World) -> Iterator[Evaluations]:
    """The evaluation projection over the same database (closed before the database goes)."""
    view = open_view(parse_database(db_url))
    yield Evaluations(view)
    close_view(view)
