"""cli: how long the command line takes, as whole processes.

Each timed run is a fresh process started the way a person starts it (the ``kpi-ledger``
script of this interpreter's environment, else ``python -m api.cli``) and waited for:

* **baseline**: ``python -c pass``, the interpreter's own start-up on this machine now;
* ``kpi-ledger --help`` and ``kpi-ledger --version`` (target: --help under 0.3 s);
* ``kpi-ledger score EMPLOYEE PERIOD`` on a demo ledger (target: under 1 s): the demo
  history (``api/demo.py``) generated once and cached as the projections benchmark caches
  its logs (``bench/results/cache/``), its views brought up to the head by an untimed first
  run, so the timed runs are what a person meets on a ledger in use.

The four are run in turn, ``reps`` rounds, so that a busy moment of the machine falls on all
of them alike; reported: the median and the slowest run of each, and each median's ratio to
the baseline's (start-up included: the ratio says what the command adds to Python's own).

* ``full`` and ``quick``: the default demo, 60 employees × 6 months (about 13,000 entries),
  25 and 10 rounds. ``tiny`` (the smoke test): 12 × 2, 2 rounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, median, render_table, say, write_result
from bench.projections import CACHE_DIR, demo_log

NAME = "cli"
TARGET_HELP_S = 0.3
TARGET_SCORE_S = 1.0
PREFERRED = ("lan.nguyen", "2026-03")  # the README's example, if the demo has her


@dataclass(frozen=True)
class Scale:
    employees: int
    months: int
    reps: int


SCALES = {
    "full": Scale(employees=60, months=6, reps=25),
    "quick": Scale(employees=60, months=6, reps=10),
    "tiny": Scale(employees=12, months=2, reps=2),
}


def kpi_ledger() -> list[str]:
    """The command as a person runs it: the environment's script, else the module."""
    script = Path(sys.executable).parent / "kpi-ledger"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "api.cli"]


def _run(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    return time.perf_counter() - start, done


def _checked(argv: list[str]) -> tuple[float, str]:
    seconds, done = _run(argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return seconds, done.stdout


def someone(command: list[str], where: list[str]) -> tuple[str, str]:
    """The employee and period the score runs ask for (the README's, if the demo has her),
    asked once untimed: that run also brings the views up to the head."""
    _, done = _run([*command, "score", *PREFERRED, *where])
    if done.returncode == 0:
        return PREFERRED
    _, out = _checked([*command, "show", "score", *where])
    first = json.loads(out.splitlines()[0])
    employee, period = str(first["employee"]), str(first["period"])
    _checked([*command, "score", employee, period, *where])
    return employee, period


def run(
    mode: str = "full",
    pg_url: str | None = None,  # unused: the demo ledger is SQLite
    *,
    results_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    scale = SCALES[mode]
    url, info = demo_log(
        scale.employees, scale.months, CACHE_DIR if cache_dir is None else cache_dir
    )
    home = Path(url.removeprefix("sqlite:///")).parent / "home"
    where = ["--db", url, "--home", str(home)]
    command = kpi_ledger()
    employee, period = someone(command, where)
    runs = {
        "baseline": [sys.executable, "-c", "pass"],
        "help": [*command, "--help"],
        "version": [*command, "--version"],
        "score": [*command, "score", employee, period, *where],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, str] = {}
    for _ in range(scale.reps):
        for name, argv in runs.items():
            seconds, outputs[name] = _checked(argv)
            times[name].append(seconds)
    base = median(times["baseline"])
    figures = {
        name: {
            "median_s": median(samples),
            "max_s": max(samples),
            "ratio": median(samples) / base,
            "runs": len(samples),
        }
        for name, samples in times.items()
    }
    figures["help"]["target_s"] = TARGET_HELP_S
    figures["help"]["meets_target"] = figures["help"]["median_s"] < TARGET_HELP_S
    figures["score"]["target_s"] = TARGET_SCORE_S
    figures["score"]["meets_target"] = figures["score"]["median_s"] < TARGET_SCORE_S
    result = {
        "mode": mode,
        "scale": asdict(scale),
        "log": info,
        "command": command,
        "score_of": {"employee": employee, "period": period},
        "score_output": outputs["score"].splitlines()[0],
        "version_output": outputs["version"].strip(),
        "figures": figures,
        "targets": {"help_s": TARGET_HELP_S, "score_s": TARGET_SCORE_S},
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    f = result["figures"]
    labels = {
        "baseline": "python -c pass",
        "help": "kpi-ledger --help",
        "version": "kpi-ledger --version",
        "score": f"kpi-ledger score {result['score_of']['employee']} "
        f"{result['score_of']['period']} ({result['log']['entries']:,} entries)",
    }
    rows = []
    for name, label in labels.items():
        row = f[name]
        target = row.get("target_s")
        rows.append(
            [
                label,
                row["median_s"] * 1000,
                row["max_s"] * 1000,
                row["ratio"],
                "-" if target is None else f"< {target * 1000:.0f} ms",
                "-" if target is None else ("meets" if row["meets_target"] else "MISSES"),
            ]
        )
    say(
        render_table(
            f"cli: whole processes, {result['scale']['reps']} rounds (ratio: median / baseline)",
            ["command", "median ms", "max ms", "ratio", "target", ""],
            rows,
        )
    )
