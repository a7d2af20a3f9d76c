"""``python -m api.cli``: the same as ``kpi-ledger``."""

from api.cli import main

raise SystemExit(main())
