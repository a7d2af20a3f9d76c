"""The PostgreSQL advisory lock keys the ledger uses, in one place (and importable without
psycopg: a SQLite ledger's commands need not load it).

* ``SCHEMA_LOCK_ID``: transaction lock around table creation (``CREATE TABLE IF NOT EXISTS``
  is not safe against a concurrent one);
* ``WRITER_LOCK_ID``: the ledger's writer, session lock from the key check to the commit
  (``domain/service.py``);
* ``JOB_LOCK_IDS``: the background jobs that run once per database (``ledger/jobs.py``).
"""

from __future__ import annotations

SCHEMA_LOCK_ID = 0x6B70696D  # "kpim"
WRITER_LOCK_ID = 0x6B70696C  # "kpil"
JOB_LOCK_IDS = {"projections": 0x6B70_6976, "checkpointer": 0x6B70_6963}  # "kpiv", "kpic"
