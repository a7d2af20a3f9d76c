"""The eventsourcing library's own recorder conformance cases, run against the sealed recorders.

Sealing must not change anything the library promises: insert/select, notifications,
concurrency conflicts, subscriptions (PostgreSQL), non-interleaving ids.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pg
import pytest
from eventsourcing.persistence import ApplicationRecorder, InfrastructureFactory
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
)
from eventsourcing.utils import Environment

from ledger.config import parse_database
from ledger.postgres import SealedPostgresFactory, SealedPostgresRecorder
from ledger.sqlite import SealedSQLiteFactory, SealedSQLiteRecorder


class _SQLiteFile:
    def setUp(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.db_path = os.path.join(self._dir.name, "ledger.db")
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        self._dir.cleanup()


class _PostgresDatabase:
    def setUp(self) -> None:
        self._db = pg.fresh_database(pg.server_dsn())
        self.pg_url = self._db.__enter__()
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        self._db.__exit__(None, None, None)

    def datastore(self) -> PostgresDatastore:
        env = parse_database(self.pg_url).env
        return PostgresDatastore(
            env["POSTGRES_DBNAME"],
            env["POSTGRES_HOST"],
            env["POSTGRES_PORT"],
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            pool_size=4,
            max_overflow=10,
        )


class TestSealedSQLiteRecorder(_SQLiteFile, ApplicationRecorderTestCase[SealedSQLiteRecorder]):
    def create_recorder(self) -> SealedSQLiteRecorder:
        recorder = SealedSQLiteRecorder(SQLiteDatastore(self.db_path))
        recorder.create_table()
        return recorder


class TestSealedSQLiteNonInterleaving(_SQLiteFile, NonInterleavingNotificationIDsBaseCase):
    insert_num = 200

    def create_recorder(self) -> ApplicationRecorder:
        recorder = SealedSQLiteRecorder(SQLiteDatastore(self.db_path))
        recorder.create_table()
        return recorder


@pytest.mark.postgres
class TestSealedPostgresRecorder(
    _PostgresDatabase, ApplicationRecorderTestCase[SealedPostgresRecorder]
):
    EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False

    def create_recorder(self) -> SealedPostgresRecorder:
        recorder = SealedPostgresRecorder(self.datastore())
        recorder.create_table()
        return recorder


@pytest.mark.postgres
class TestSealedPostgresNonInterleaving(_PostgresDatabase, NonInterleavingNotificationIDsBaseCase):
    insert_num = 200

    def create_recorder(self) -> ApplicationRecorder:
        recorder = SealedPostgresRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestSealedSQLiteFactory(_SQLiteFile, InfrastructureFactoryTestCase[SealedSQLiteFactory]):
    def expected_factory_class(self) -> type[SealedSQLiteFactory]:
        return SealedSQLiteFactory

    def expected_aggregate_recorder_class(self) -> type[Any]:
        from eventsourcing.sqlite import SQLiteAggregateRecorder

        return SQLiteAggregateRecorder

    def expected_application_recorder_class(self) -> type[Any]:
        return SealedSQLiteRecorder

    def expected_tracking_recorder_class(self) -> type[Any]:
        from eventsourcing.sqlite import SQLiteTrackingRecorder

        return SQLiteTrackingRecorder

    def tracking_recorder_subclass(self) -> type[Any]:
        from eventsourcing.sqlite import SQLiteTrackingRecorder

        class Sub(SQLiteTrackingRecorder):
            pass

        return Sub

    def expected_process_recorder_class(self) -> type[Any]:
        from eventsourcing.sqlite import SQLiteProcessRecorder

        return SQLiteProcessRecorder

    def setUp(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.db_path = os.path.join(self._dir.name, "ledger.db")
        self.env = Environment("TestCase")
        self.env.update(parse_database(f"sqlite:///{self.db_path}").env)
        InfrastructureFactoryTestCase.setUp(self)

    def tearDown(self) -> None:
        InfrastructureFactoryTestCase.tearDown(self)
        self._dir.cleanup()


def test_factory_from_url_builds_sealed_recorders(db_url: str) -> None:
    env = Environment("Ledger", parse_database(db_url).env)
    factory = InfrastructureFactory.construct(env)
    try:
        recorder = factory.application_recorder()
        assert isinstance(recorder, SealedSQLiteRecorder | SealedPostgresRecorder)
        assert recorder.log_size() == 0
    finally:
        factory.close()


def test_refused_writes_never_leave_a_gap_in_seq(db_url: str) -> None:
    """A version conflict or a replayed nonce may burn a notification id, never a seq."""
    import uuid

    from eventsourcing.persistence import IntegrityError

    from ledger.sealer import SealedStoredEvent
    from ledger.store import ReplayedEnvelopeError
    from signing.merkle import leaf_hash, root_of

    env = Environment("Ledger", parse_database(db_url).env)
    factory = InfrastructureFactory.construct(env)
    recorder = factory.application_recorder()
    assert isinstance(recorder, SealedSQLiteRecorder | SealedPostgresRecorder)
    try:
        stream = uuid.uuid4()

        def event(version: int, nonce: str) -> SealedStoredEvent:
            return SealedStoredEvent(stream, version, "t", b'{"v":%d}' % version, nonce=nonce)

        recorder.insert_events([event(1, "a" * 32), event(2, "b" * 32)])
        with pytest.raises(IntegrityError):
            recorder.insert_events([event(2, "c" * 32)])  # version conflict
        with pytest.raises(ReplayedEnvelopeError):
            recorder.insert_events([event(3, "a" * 32)])  # nonce already sealed
        ids = recorder.insert_events([event(3, "d" * 32), event(4, "e" * 32)])
        rows = list(recorder.read_rows())
        assert [r.seq for r in rows] == [0, 1, 2, 3]
        assert [r.notification_id for r in rows][2:] == list(ids or [])
        assert all(r.entry is not None and leaf_hash(r.entry) == r.leaf_hash for r in rows)
        assert recorder.root() == root_of([r.leaf_hash for r in rows])
        if isinstance(recorder, SealedPostgresRecorder):
            assert ids is not None and ids[0] > 3  # the refused writes burned sequence values
    finally:
        factory.close()


@pytest.mark.postgres
class TestSealedPostgresFactory(InfrastructureFactoryTestCase[SealedPostgresFactory]):
    def expected_factory_class(self) -> type[SealedPostgresFactory]:
        return SealedPostgresFactory

    def expected_aggregate_recorder_class(self) -> type[Any]:
        from eventsourcing.postgres import PostgresAggregateRecorder

        return PostgresAggregateRecorder

    def expected_application_recorder_class(self) -> type[Any]:
        return SealedPostgresRecorder

    def expected_tracking_recorder_class(self) -> type[Any]:
        from eventsourcing.postgres import PostgresTrackingRecorder

        return PostgresTrackingRecorder

    def tracking_recorder_subclass(self) -> type[Any]:
        from eventsourcing.postgres import PostgresTrackingRecorder

        class Sub(PostgresTrackingRecorder):
            pass

        return Sub

    def expected_process_recorder_class(self) -> type[Any]:
        from eventsourcing.postgres import PostgresProcessRecorder

        return PostgresProcessRecorder

    def setUp(self) -> None:
        self._db = pg.fresh_database(pg.server_dsn())
        url = self._db.__enter__()
        self.env = Environment("TestCase")
        self.env.update(parse_database(url).env)
        InfrastructureFactoryTestCase.setUp(self)

    def tearDown(self) -> None:
        InfrastructureFactoryTestCase.tearDown(self)
        self._db.__exit__(None, None, None)
