"""``docs/openapi.json`` is the document the service serves (regenerate it with
``kpi-ledger openapi > docs/openapi.json``), and every path is versioned."""

from __future__ import annotations

import json
from pathlib import Path

from api.cli import openapi_text

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_checked_in_document_is_the_served_one() -> None:
    served = json.loads(openapi_text())
    assert json.loads(DOC.read_text()) == served, (
        "docs/openapi.json is stale: run kpi-ledger openapi > docs/openapi.json"
    )
    assert served["paths"] and all(path.startswith("/v1/") for path in served["paths"])
    for path, operations in served["paths"].items():
        for method, operation in operations.items():
            assert operation.get("operationId"), (method, path)
