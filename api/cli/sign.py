"""``keygen`` and ``sign``: key files and DSSE envelopes, offline (no database)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.cli.common import UsageError
from signing.canonical import loads_strict
from signing.errors import IntegrityError
from signing.facts import make_payload, sign_payload
from signing.keys import SigningKey, read_signing_key, write_key_pair


def cmd_keygen(args: argparse.Namespace) -> int:
    key = SigningKey.generate(args.name)
    private, public = write_key_pair(key, Path(args.out))
    print(f"private key: {private}\npublic key:  {public}\nkey id:      {key.keyid}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign ``{"type", "data"[, "actor", "idempotency_key"]}``; the key id, the nonce and the
    time (now, or ``--time``: the ledger's window still applies when it is appended) are
    added."""
    key = read_signing_key(Path(args.keyfile))
    text = sys.stdin.read() if args.payload == "-" else Path(args.payload).read_text("utf-8")
    try:
        body = loads_strict(text, what=args.payload)
    except IntegrityError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(body, dict) or "type" not in body or "data" not in body:
        raise UsageError('the payload file must be {"type": "...", "data": {...}}')
    unknown = set(body) - {"type", "data", "actor", "idempotency_key"}
    if unknown:
        raise UsageError(
            f"unexpected fields {sorted(unknown)}: key id, time and nonce are added"
            " (the time: --time)"
        )
    payload = make_payload(
        key,
        body["type"],
        body["data"],
        actor=body.get("actor"),
        idempotency_key=body.get("idempotency_key"),
        time=args.time,
    )
    sys.stdout.write(sign_payload(key, payload).to_bytes().decode() + "\n")
    return 0
