"""Reading an export bundle (a directory, or a tar of one) for the offline verifier.

Layout (docs/integrity.md, "Export bundle"): ``log.vkey``, ``checkpoints/*``,
``entries.jsonl`` with lines ``{"seq": N, "entry": "<base64>"}``, and optionally
``extra/leaf-hashes.bin``. Entries are streamed; nothing is loaded whole.
"""

from __future__ import annotations

import base64
import binascii
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from signing.errors import EntryError
from signing.keys import VerifierKey, read_verifier_keys


class BundleError(EntryError):
    """The bundle's files are missing or malformed."""


class ExportSource:
    """A ``LogSource`` over an export bundle."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path.is_file() and tarfile.is_tarfile(path):
            self._tmp = tempfile.TemporaryDirectory()
            with tarfile.open(path) as tar:
                tar.extractall(self._tmp.name, filter="data")
            path = Path(self._tmp.name)
        if not (path / "entries.jsonl").is_file():
            raise BundleError(f"{path} is not an export bundle (no entries.jsonl)")
        self.path = path

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> ExportSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bundled_log_keys(self) -> list[VerifierKey]:
        """The keys the bundle says it has (to compare with the keys the inspector trusts)."""
        return read_verifier_keys(self.path / "log.vkey")

    def checkpoint_notes(self) -> list[str]:
        folder = self.path / "checkpoints"
        if not folder.is_dir():
            return []
        return [p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.is_file()]

    def claimed_leaves(self) -> Iterator[bytes]:
        path = self.path / "extra" / "leaf-hashes.bin"
        if not path.is_file():
            return
        with open(path, "rb") as handle:
            while True:
                block = handle.read(32 * 4096)
                if not block:
                    return
                for i in range(0, len(block) - 31, 32):
                    yield block[i : i + 32]

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        leaves = self.claimed_leaves()
        with open(self.path / "entries.jsonl", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    obj = json.loads(line)
                    seq = obj["seq"]
                    text = obj["entry"]
                    if type(seq) is not int or not isinstance(text, str):
                        raise ValueError("seq must be an integer and entry a string")
                    entry = base64.b64decode(text, validate=True) if text else None
                except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                    raise BundleError(f"entries.jsonl line {number} is malformed: {exc}") from None
                yield seq, entry, next(leaves, None)

    def size_hint(self) -> int:
        """The number of entries (lines), counted without parsing."""
        count = 0
        with open(self.path / "entries.jsonl", "rb") as handle:
            while block := handle.read(1 << 20):
                count += block.count(b"\n")
        return count
