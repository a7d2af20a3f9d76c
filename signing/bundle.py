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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from signing.errors import EntryError
from signing.keys import VerifierKey, read_verifier_keys
from signing.merkle import leaf_hash


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
    rows: list[tuple[int, bytes | None, bytes | None]] = []
    first = part.first
    if part.leaves is None:
        for i, line in enumerate(lines):
            seq, entry = _parse_line(first + i + 1, line)
            rows.append((seq, entry, None))
        return rows
    with open(part.leaves, "rb") as handle:
        handle.seek(32 * first)
        leaves = handle.read(32 * part.count)
        for i, line in enumerate(lines):
            seq, entry = _parse_line(first + i + 1, line)
            claimed = leaves[32 * i : 32 * i + 32]
            if seq != first + i:  # a line is missing before this one: realign
                claimed = _realigned(handle, seq, entry, claimed)
            rows.append((seq, entry, claimed if len(claimed) == 32 else None))
    return rows


def _realigned(leaves: BinaryIO, seq: int, entry: bytes | None, by_line: bytes) -> bytes:
    """The claim of a line whose ``seq`` is not its line number.

    The export writes one hash per line (line ``i``, hash ``i``), so a log that lost a row
    has neither its line nor its hash, and the pairing by line holds. A line removed from
    ``entries.jsonl`` alone leaves its hash behind, and every later line's hash sits at its
    ``seq``: the stored hash that the entry reproduces is its claim; if neither does (the
    entry was changed too), the pairing by line stands.
    """
    if entry is None or seq < 0:
        return by_line
    leaf = leaf_hash(entry)
    if leaf == by_line:
        return by_line
    leaves.seek(32 * seq)
    by_seq = leaves.read(32)
    return by_seq if by_seq == leaf else by_line


def _refusal(member: tarfile.TarInfo) -> str | None:
    """Why a tar member cannot be part of a bundle (which holds files and folders only)."""
    name = PurePosixPath(member.name)
    if name.is_absolute():
        return "has an absolute path"
    if ".." in name.parts:
        return "leads out of the bundle (a '..' in its path)"
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if not (member.isreg() or member.isdir()):
        return "is a device, pipe or other special file"
    return None


def _extract(path: Path, into: str) -> None:
    """Unpack a tar bundle into ``into``, refusing it whole if any member could land elsewhere.

    Every member is checked before anything is written; where the interpreter has tarfile's
    data filter (Python 3.11.4 and later) it guards the extraction as well.
    """
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            for member in members:
                reason = _refusal(member)
                if reason is not None:
                    raise BundleError(
                        f"{path} is refused: its member {member.name!r} {reason}; "
                        "an export bundle holds only files and folders inside it"
                    )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:  # Python 3.11.0 to 3.11.3: the checks above are the guard
                tar.extractall(into, members=members)
    except tarfile.TarError as exc:  # including the data filter's refusals (FilterError)
        raise BundleError(f"{path} is refused: {exc}") from None
    except (EOFError, zlib.error) as exc:
        raise BundleError(f"{path} is not a readable tar file: {exc}") from None


class ExportSource:
    """A ``LogSource`` over an export bundle."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path.is_file() and tarfile.is_tarfile(path):
            self._tmp = tempfile.TemporaryDirectory()
            try:
                _extract(path, self._tmp.name)
            except BaseException:
                self._tmp.cleanup()
                raise
            path = Path(self._tmp.name)
        if not (path / "entries.jsonl").is_file():
            self.close()
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

    def _leaves_path(self) -> Path | None:
        path = self.path / "extra" / "leaf-hashes.bin"
        return path if path.is_file() else None

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        """All rows in order, in this process (the verifier's workers read ``slices``)."""
        for part in self.slices(4096):
            yield from load_slice(part)

    def slices(self, lines: int) -> Iterator[Slice]:
        """Cut ``entries.jsonl`` into runs of ``lines`` lines (only newlines are read here)."""
        leaves_path = self._leaves_path()
        leaves = None if leaves_path is None else str(leaves_path)
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
