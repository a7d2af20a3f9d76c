"""Benchmarks of the ledger: ``python -m bench [--quick] [--only NAME] [--pg URL]``.

``append``  sealing overhead on the write path (recorder and full application), SQLite and
            PostgreSQL;
``verify``  offline verification of an export bundle vs bare Ed25519 verification;
``proofs``  inclusion / consistency proof latency in a large log vs a primary-key SELECT.

Each prints its tables and writes ``bench/results/<name>.json``. The machine is shared and
noisy, so every figure is reported as a ratio against a baseline measured in the same run.
"""
