"""Reading an export bundle (a directory, or a tar of one) for the offline verifier.

Layout (docs/integrity.md, "Export bundle"): ``log.vkey``, ``checkpoints/*``,
``entries.jsonl`` with lines ``{"seq": N, "entry": "<base64>"}``, and optionally
``extra/leaf-hashes.bin``. Entries are streamed; nothing is loaded whole.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from signing.errors import EntryError
from signing.keys import VerifierKey, read_verifier_keys


class BundleError(EntryError):
    """The bundle's files are missing or malformed."""


@dataclass(frozen=True)
class Slice:
    """A run of consecutive lines of ``entries.jsonl`` that a worker process loads itself."""

    entries: str  # path of entries.jsonl
    leaves: str | None  # path of extra/leaf-hashes.bin, if any
    offset: int  # byte offset of the first line
    length: int  # bytes
    first: int  # index of the first line (and of its leaf hash)
    count: int


_NUMBER = re.compile(rb"(?:0|[1-9][0-9]*)\Z")


def _parse_line(number: int, line: bytes | str) -> tuple[int, bytes | None]:
    if isinstance(line, bytes) and line.startswith(b'{"seq":'):
        # The export writes exactly {"seq":N,"entry":"<base64>"}: cut it at its delimiters.
        cut = line.find(b',"entry":"', 7)
        body = line.rstrip(b"\r\n")
        if cut > 7 and body.endswith(b'"}') and _NUMBER.match(line[7:cut]):
            text = body[cut + 10 : -2]
            try:
                return int(line[7:cut]), binascii.a2b_base64(text, strict_mode=True) or None
            except binascii.Error:
                pass  # reported by the general path below
    try:
        obj = json.loads(line)
        seq = obj["seq"]
        text = obj["entry"]
        if type(seq) is not int or not isinstance(text, str):
            raise ValueError("seq must be an integer and entry a string")
        return seq, base64.b64decode(text, validate=True) if text else None
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error) as exc:
        raise BundleError(f"entries.jsonl line {number} is malformed: {exc}") from None


def load_slice(part: Slice) -> list[tuple[int, bytes | None, bytes | None]]:
    """The rows of one slice: (position, entry bytes, stored leaf hash)."""
    with open(part.entries, "rb") as handle:
        handle.seek(part.offset)
        lines = handle.read(part.length).splitlines()
    leaves = b""
    if part.leaves is not None:
        with open(part.leaves, "rb") as handle:
            handle.seek(32 * part.first)
            leaves = handle.read(32 * part.count)
    rows: list[tuple[int, bytes | None, bytes | None]] = []
    for i, line in enumerate(lines):
        seq, entry = _parse_line(part.first + i + 1, line)
        claimed = leaves[32 * i : 32 * i + 32]
        rows.append((seq, entry, claimed if len(claimed) == 32 else None))
    return rows


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
                seq, entry = _parse_line(number, line)
                yield seq, entry, next(leaves, None)

    def slices(self, lines: int) -> Iterator[Slice]:
        """Cut ``entries.jsonl`` into runs of ``lines`` lines (only newlines are read here)."""
        leaves_path = self.path / "extra" / "leaf-hashes.bin"
        leaves = str(leaves_path) if leaves_path.is_file() else None
        path = str(self.path / "entries.jsonl")
        offset = start = first = count = 0
        with open(path, "rb") as handle:
            for line in handle:
                offset += len(line)
                count += 1
                if count == lines:
                    yield Slice(path, leaves, start, offset - start, first, count)
                    start, first, count = offset, first + count, 0
        if count:
            yield Slice(path, leaves, start, offset - start, first, count)

    def size_hint(self) -> int:
        """The number of entries (lines), counted without parsing."""
        count = 0
        with open(self.path / "entries.jsonl", "rb") as handle:
            while block := handle.read(1 << 20):
                count += block.count(b"\n")
        return count
