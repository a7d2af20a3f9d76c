"""Export bundles edited after the export, and tar files that are not bundles.

An export pairs line ``i`` of ``entries.jsonl`` with hash ``i`` of ``extra/leaf-hashes.bin``.
A line removed from ``entries.jsonl`` alone (its hash left behind) must be reported once, as
the deletion it is, not as a deletion followed by every later entry "changed". A tar member
that could land outside the verifier's temporary folder is bad input (exit status 2).

The bundle's source database does not matter here: SQLite only.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Ledger, make_ledger

from api.cli import main
from ledger.export import export_bundle
from signing.bundle import ExportSource
from signing.entry import decode_entry, encode_entry
from signing.verify import CHUNK, Report, verify

SIZE = 1303  # 3 key registrations and 1300 attestations: three verifier chunks of 512 lines
MIDDLE_CHECKPOINT = 603


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Ledger]]:
    """One ledger of SIZE entries with checkpoints at 603 and SIZE, exported once."""
    root = tmp_path_factory.mktemp("bundle")
    ledger = make_ledger(f"sqlite:///{root / 'ledger.db'}", root / "home")
    try:
        ledger.attest("lan", 600)
        ledger.checkpointer().checkpoint()
        ledger.attest("minh", 700, start=10_000)
        ledger.checkpointer().checkpoint()
        assert ledger.service.sealed.log_size() == SIZE
        export_bundle(ledger.service.sealed, root / "bundle")
        yield root / "bundle", ledger
    finally:
        ledger.service.close()


@pytest.fixture
def bundle(exported: tuple[Path, Ledger], tmp_path: Path) -> Path:
    """A copy of the exported bundle, to edit."""
    return Path(shutil.copytree(exported[0], tmp_path / "bundle"))


def _verify(bundle: Path, ledger: Ledger) -> Report:
    with ExportSource(bundle) as source:
        return verify(source, ledger.log_keys, workers=2)


def _problems(report: Report) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in report.problems]


def _edit_lines(bundle: Path, edit: Callable[[list[str]], list[str]]) -> None:
    path = bundle / "entries.jsonl"
    path.write_text("".join(edit(path.read_text().splitlines(keepends=True))))


def _drop_hash(bundle: Path, index: int) -> None:
    path = bundle / "extra" / "leaf-hashes.bin"
    data = path.read_bytes()
    path.write_bytes(data[: 32 * index] + data[32 * index + 32 :])


def test_the_untouched_bundle_verifies(bundle: Path, exported: tuple[Path, Ledger]) -> None:
    report = _verify(bundle, exported[1])
    assert report.ok, report.problems
    assert report.size == SIZE and report.authenticated_prefix == SIZE
    assert SIZE > 2 * CHUNK


@pytest.mark.parametrize("hashes", ["kept", "without the file", "removed with the line"])
@pytest.mark.parametrize("line", [12, CHUNK - 1, CHUNK, 700, SIZE - 2])
def test_a_deleted_line_is_one_deletion(
    bundle: Path, exported: tuple[Path, Ledger], line: int, hashes: str
) -> None:
    _edit_lines(bundle, lambda lines: lines[:line] + lines[line + 1 :])
    if hashes == "without the file":
        (bundle / "extra" / "leaf-hashes.bin").unlink()
    elif hashes == "removed with the line":
        _drop_hash(bundle, line)
    report = _verify(bundle, exported[1])
    assert _problems(report) == [(line, "deleted")], report.problems[:5]
    assert report.size == SIZE
    assert report.signatures_checked == SIZE - 1


def test_the_last_line_deleted_is_a_truncated_tail(
    bundle: Path, exported: tuple[Path, Ledger]
) -> None:
    _edit_lines(bundle, lambda lines: lines[:-1])
    report = _verify(bundle, exported[1])
    assert _problems(report) == [(SIZE - 1, "deleted")]
    assert "the tail was truncated" in report.problems[0].detail


def test_after_a_deleted_line_a_changed_entry_is_still_named(
    bundle: Path, exported: tuple[Path, Ledger]
) -> None:
    def edit(lines: list[str]) -> list[str]:
        entry = decode_entry(base64.b64decode(json.loads(lines[800])["entry"]))
        altered = encode_entry(
            entry.seq, entry.stream, entry.version, entry.type, "2020-01-01T00:00:00.000000Z",
            entry.envelope,
        )  # fmt: skip
        line = json.dumps({"seq": 800, "entry": base64.b64encode(altered).decode()})
        return lines[:100] + lines[101:800] + [line.replace(" ", "") + "\n"] + lines[801:]

    _edit_lines(bundle, edit)
    report = _verify(bundle, exported[1])
    assert _problems(report) == [(100, "deleted"), (800, "changed")], report.problems[:5]


def test_two_deleted_lines_are_two_deletions(bundle: Path, exported: tuple[Path, Ledger]) -> None:
    _edit_lines(bundle, lambda lines: lines[:40] + lines[41:1100] + lines[1101:])
    report = _verify(bundle, exported[1])
    assert _problems(report) == [(40, "deleted"), (1100, "deleted")], report.problems[:5]


# -- tar files ---------------------------------------------------------------------------


def _tar(bundle: Path, target: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(target, "w:gz" if target.suffix == ".gz" else "w") as tar:
        tar.add(bundle, arcname=".")
        extra(tar)
    return target


def _member(name: str, kind: bytes, link: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        content = b""
        if kind == tarfile.REGTYPE:
            content = b"owned"
        elif kind == tarfile.CHRTYPE:
            info.devmajor, info.devminor = 1, 3
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))

    return add


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the verifier unpacks tar bundles under (its temporary directory)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def _cli_verify(tar: Path, ledger: Ledger) -> int:
    return main(["verify", str(tar), "--log-key", str(ledger.home.vkey_path), "--workers", "1"])


def test_a_tar_bundle_verifies(
    scratch: Path, bundle: Path, exported: tuple[Path, Ledger], capsys: pytest.CaptureFixture[str]
) -> None:
    tar = _tar(bundle, scratch.parent / "bundle.tar.gz", lambda tar: None)
    assert _cli_verify(tar, exported[1]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {SIZE} entries")
    assert list(scratch.iterdir()) == []  # unpacked in a temporary folder, removed after


@pytest.mark.parametrize(
    ("name", "kind", "link", "words"),
    [
        ("../escaped.txt", tarfile.REGTYPE, "", "'..'"),
        ("checkpoints/../../escaped.txt", tarfile.REGTYPE, "", "'..'"),
        ("{root}/escaped.txt", tarfile.REGTYPE, "", "absolute path"),
        ("checkpoints/escaped", tarfile.SYMTYPE, "../../../escaped.txt", "is a link"),
        ("checkpoints/passwd", tarfile.SYMTYPE, "/etc/passwd", "is a link"),
        ("checkpoints/hard", tarfile.LNKTYPE, "../escaped.txt", "is a link"),
        ("checkpoints/shadow", tarfile.LNKTYPE, "/etc/shadow", "is a link"),
        ("checkpoints/null", tarfile.CHRTYPE, "", "special file"),
        ("checkpoints/fifo", tarfile.FIFOTYPE, "", "special file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "abs-symlink", "hardlink",
         "abs-hardlink", "device", "fifo"],
)  # fmt: skip
def test_a_tar_member_that_could_escape_is_bad_input(
    scratch: Path,
    bundle: Path,
    exported: tuple[Path, Ledger],
    capsys: pytest.CaptureFixture[str],
    name: str,
    kind: bytes,
    link: str,
    words: str,
) -> None:
    member = _member(name.format(root=scratch.parent), kind, link)
    tar = _tar(bundle, scratch.parent / "bundle.tar.gz", member)
    capsys.readouterr()
    assert _cli_verify(tar, exported[1]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("kpi-ledger verify: ") and "is refused" in captured.err
    assert words in captured.err and "Traceback" not in captured.err
    # Nothing was written anywhere: not beside the scratch folder, not inside it.
    assert not list(scratch.parent.rglob("escaped*"))
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("name", ["bundle.tar", "bundle.tar.gz"])
def test_a_truncated_tar_is_bad_input(
    scratch: Path,
    bundle: Path,
    exported: tuple[Path, Ledger],
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    tar = _tar(bundle, scratch.parent / name, lambda tar: None)
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    assert _cli_verify(tar, exported[1]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kpi-ledger verify: ") and "Traceback" not in err
    assert list(scratch.iterdir()) == []
