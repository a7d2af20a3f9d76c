"""Signed notes against the C2SP example, and checkpoints with timestamped cosignatures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signing.checkpoint import (
    Checkpoint,
    log_verifier_keys,
    sign_checkpoint,
    verify_checkpoint,
)
from signing.errors import NoteError
from signing.keys import SigningKey, VerifierKey
from signing.note import open_note

VECTOR = json.loads(
    (Path(__file__).parent.parent / "vectors" / "c2sp-signed-note" / "example.json").read_text()
)


def test_c2sp_example_verifies() -> None:
    key = VerifierKey.parse(VECTOR["verifier_key"])
    opened = open_note(VECTOR["note"], [key])
    assert opened.text == "This is an example message.\n"


def test_c2sp_example_any_text_byte_changed_fails() -> None:
    key = VerifierKey.parse(VECTOR["verifier_key"])
    note: str = VECTOR["note"]
    text_len = len("This is an example message.\n")
    for i in range(text_len - 1):
        changed = note[:i] + chr(ord(note[i]) ^ 1) + note[i + 1 :]
        with pytest.raises(NoteError):
            open_note(changed, [key])


def test_unknown_keys_are_ignored_but_one_known_is_required() -> None:
    key = VerifierKey.parse(VECTOR["verifier_key"])
    other = SigningKey.generate("example.com/foo")
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        open_note(VECTOR["note"], [other.verifier()])
    # An extra line from an unknown key does not matter.
    extra = VECTOR["note"] + "— witness.example AAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    assert open_note(extra, [key]).text.startswith("This is")


def test_checkpoint_sign_verify_and_timestamp() -> None:
    key = SigningKey.generate("ledger.example/kpi")
    cp = Checkpoint("ledger.example/kpi", 5, bytes(32))
    note = sign_checkpoint(cp, key, 1_779_000_000)
    signed = verify_checkpoint(note, log_verifier_keys(key))
    assert signed.checkpoint == cp and signed.timestamp == 1_779_000_000
    # A verifier holding only the plain note key still verifies it (cosignature ignored).
    assert verify_checkpoint(note, [key.verifier()]).timestamp is None
    forged = note.replace("\n5\n", "\n6\n")
    with pytest.raises(NoteError):
        verify_checkpoint(forged, log_verifier_keys(key))


@pytest.mark.parametrize(
    "body",
    ["o\n01\n" + "A" * 43 + "=\n", "o\n1\nshort\n", "\n1\n" + "A" * 43 + "=\n", "o\n1\n"],
)
def test_malformed_checkpoint_bodies(body: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(body)
