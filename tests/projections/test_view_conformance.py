"""The ``eventsourcing`` library's tracking-recorder conformance cases, run against the views.

``SQLiteEvaluationView`` and ``PostgresEvaluationView`` are the library's tracking recorders
with the read-model tables beside them: inserting, waiting for and checking tracking
positions must behave exactly as the library promises (the runners rely on it).
"""

from __future__ import annotations

import pytest
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests.persistence import TrackingRecorderTestCase

from projections.store import PostgresEvaluationView, SQLiteEvaluationView
from tests.ledger.test_recorder_conformance import _PostgresDatabase, _SQLiteFile


class TestSQLiteEvaluationView(_SQLiteFile, TrackingRecorderTestCase):
    def create_recorder(self) -> SQLiteEvaluationView:
        view = SQLiteEvaluationView(SQLiteDatastore(self.db_path))  # type: ignore[attr-defined]
        view.create_table()
        return view


@pytest.mark.postgres
class TestPostgresEvaluationView(_PostgresDatabase, TrackingRecorderTestCase):
    def create_recorder(self) -> PostgresEvaluationView:
        view = PostgresEvaluationView(self.datastore())
        view.create_table()
        return view
