"""The examples run: every ```sh block of README.md, docs/integration.md and docs/inspection.md,
in order, against a fresh demo (``kpi-ledger demo --employees 12 --months 3`` on SQLite, its
keys written out and a token issued to everyone, as ``./scripts/serve`` does) with a running
``kpi-ledger serve``. A block that cannot run here is marked ``<!-- not run: why -->`` right
before it; every other block must run and exit 0. Also: ``verify-receipt`` given a file that
is not a receipt or not an entry says so (exit 2), never "FAILED"; and ``/v1/docs`` asks
nothing of the network."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx2 as httpx
import pytest

from api.demo import default_start
from bench.common import serving
from signing.entry import decode_entry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/integration.md", "docs/inspection.md")
MAX_NOT_RUN = 5  # the installers, a second terminal, a close that must wait for the month's end
FENCE = re.compile(r"^```(\S*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (\S.*?) -->$")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of its opening fence, 1-based
    text: str
    not_run: str | None  # why, if marked


def blocks(doc: str) -> list[Block]:
    """The ```sh blocks of ``doc``, with the ``not run`` mark of the line before each."""
    found: list[Block] = []
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) == "sh":
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            mark = NOT_RUN.match(before.strip())
            text = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Block(doc, i + 1, text, mark.group(1) if mark else None))
        i = end + 1
    return found


@dataclass(frozen=True)
class Demo:
    root: Path  # plays the repository's root: demo-service/ in it, as ./scripts/serve makes
    env: dict[str, str]
    base: str  # the running service


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("docs")
    work = root / "demo-service"
    work.mkdir()
    (root / "tmp").mkdir()
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{Path(sys.executable).parent}"
        f"{os.pathsep}{os.environ.get('PATH', '')}",
        "KPI_LEDGER_DB": f"sqlite:///{work / 'ledger.db'}",
        "KPI_LEDGER_HOME": str(work / "home"),
        "TMPDIR": str(root / "tmp"),
        "PYTHONPATH": str(ROOT),
    }
    # The start is pinned (the default's own rule, for today): the last month is the current.
    start = f"{default_start(3, dt.datetime.now(dt.UTC)):%Y-%m}"
    cli = [sys.executable, "-m", "api.cli"]
    demo = [*cli, "demo", "--employees", "12", "--months", "3", "--start", start]
    (work / "demo.txt").write_text(_run([*demo, "--keys-out", "keys"], env, work))
    names = sorted(p.stem for p in (work / "keys").glob("*.key"))
    (work / "tokens.tsv").write_text(_run([*cli, "principal", "add", *names], env, work))
    args = [*cli, "serve", "--db", env["KPI_LEDGER_DB"], "--home", env["KPI_LEDGER_HOME"]]
    with serving([*args, "--checkpoint-seconds", "1", "--log-level", "warning"]) as (base, _):
        env["PORT"] = base.rsplit(":", 1)[1]
        yield Demo(root, env, base)


def test_the_blocks_are_found_and_few_are_marked() -> None:
    found = [b for doc in DOCS for b in blocks(doc)]
    assert {b.doc for b in found} == set(DOCS)
    marked = [b for b in found if b.not_run is not None]
    assert len(marked) <= MAX_NOT_RUN, [(b.doc, b.line, b.not_run) for b in marked]
    assert len(found) - len(marked) >= 15


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_runs(demo: Demo, doc: str) -> None:
    """The doc's blocks in one bash session, in order, as a reader types them in one terminal
    from the repository's root (variables and the directory carry over): each with
    ``set -euo pipefail``; the session stops at the first block that fails."""
    runnable = [b for b in blocks(doc) if b.not_run is None]
    marks = demo.root / "tmp" / f"{Path(doc).stem}.ran"
    script = ["set -euo pipefail"]
    for n, block in enumerate(runnable):
        script += [f"echo '>>> {doc}:{block.line}' >&2", block.text, f"echo {n} >> '{marks}'"]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=demo.env,
        cwd=demo.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ran = marks.read_text().split() if marks.exists() else []
    if done.returncode != 0 or len(ran) != len(runnable):
        failed = runnable[len(ran)] if len(ran) < len(runnable) else runnable[-1]
        pytest.fail(
            f"{doc}: the block at line {failed.line} exited {done.returncode}:\n"
            f"{failed.text}\n--- stdout (end)\n{done.stdout[-3000:]}\n"
            f"--- stderr (end)\n{done.stderr[-3000:]}"
        )


def test_verify_receipt_tells_a_file_that_is_not_a_receipt(demo: Demo) -> None:
    """A 403 problem body saved by ``curl -s`` in place of the receipt or of the entry is bad
    input (exit 2, named as such), not a failed check ("FAILED: root mismatch")."""
    work = demo.root / "demo-service"
    folder = demo.root / "tmp" / "receipts"
    folder.mkdir()
    tokens = dict(line.split("\t") for line in (work / "tokens.tsv").read_text().splitlines())
    inspector = {"Authorization": f"Bearer {tokens['binh.vo']}"}
    receipt = httpx.get(f"{demo.base}/v1/receipts/5", headers=inspector, timeout=30)
    entry = httpx.get(f"{demo.base}/v1/entries/5", headers=inspector, timeout=30)
    assert receipt.status_code == entry.status_code == 200
    (folder / "receipt").write_bytes(receipt.content)
    (folder / "entry").write_bytes(entry.content)
    stranger = {"Authorization": f"Bearer {tokens['lan.nguyen']}"}  # not her entry
    forbidden = httpx.get(f"{demo.base}/v1/entries/5", headers=stranger, timeout=30)
    assert forbidden.status_code == 403
    (folder / "problem").write_bytes(forbidden.content)
    other = httpx.get(f"{demo.base}/v1/entries/6", headers=inspector, timeout=30)
    (folder / "other").write_bytes(other.content)
    # An entry, at the receipt's position, recorded otherwise than the log holds it: the check
    # itself fails (exit 1), as it must.
    altered = dataclasses.replace(decode_entry(entry.content), recorded_at="2020-01-01T00:00:00Z")
    (folder / "altered").write_bytes(altered.to_bytes())

    def verify(receipt_file: str, entry_file: str) -> subprocess.CompletedProcess[str]:
        args = ["kpi-ledger", "verify-receipt", receipt_file, entry_file, "--log-key"]
        return subprocess.run(
            [*args, str(work / "home" / "log.vkey")],
            env=demo.env,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = verify("receipt", "entry")
    assert (ok.returncode, ok.stdout.split(" is in ")[0]) == (0, "OK: entry 5"), ok.stderr
    failed = verify("receipt", "altered")
    assert failed.returncode == 1 and failed.stdout.startswith("FAILED: "), failed
    for receipt_file, entry_file, said in (
        ("receipt", "problem", "problem is not a log entry"),
        ("problem", "entry", "problem is not a receipt"),
        ("receipt", "other", "other is entry 6, the receipt is for entry 5"),
    ):
        bad = verify(receipt_file, entry_file)
        assert bad.returncode == 2, bad
        assert said in bad.stderr and "FAILED" not in bad.stdout + bad.stderr


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_swagger_ui_is_served_by_the_service(demo: Demo) -> None:
    """``/v1/docs`` loads Swagger UI from the service itself (no CDN): every URL the page
    names is same-origin, and each answers 200 with its content type."""
    page = httpx.get(f"{demo.base}/v1/docs", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = _Links()
    links.feed(page.text)
    assert "SwaggerUIBundle(" in page.text and "url: '/v1/openapi.json'" in page.text
    assert not re.search(r"https?:|//[a-z]", page.text)  # no absolute URL, none elsewhere
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    assert sorted(Path(u).suffix for u in links.urls) == [".css", ".js", ".png"]
    for url in links.urls:
        assert url.startswith("/v1/docs/") and not url.startswith("//"), url
        asset = httpx.get(demo.base + url, timeout=30)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(kinds[Path(url).suffix]), url
        assert len(asset.content) > 1000
    script = httpx.get(f"{demo.base}/v1/docs/swagger-ui-bundle.js", timeout=30).text
    assert "SwaggerUIBundle" in script


def test_the_commands_scripts_serve_prints_run(demo: Demo) -> None:
    """``./scripts/serve`` ends by printing commands to try: printed for this demo and
    port (its own lines, from ``token()`` to the end of the message), each runs and exits 0."""
    lines = (ROOT / "scripts" / "serve").read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if line.startswith("token() {"))
    end = next(i for i in range(begin, len(lines)) if lines[i] == "INFO")
    printing = "\n".join(lines[begin : end + 1])
    work = demo.root / "demo-service"
    message = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\nwork={work}\nport={demo.env['PORT']}\n{printing}"],
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    commands = [line.strip() for line in message.splitlines() if line.strip().startswith("curl ")]
    assert len(commands) == 2, message
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{command}"],
            env=demo.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and done.stdout.startswith(("{", "demo.")), (command, done)
