"""The export bundle: what an inspector takes away (docs/integrity.md, "Export bundle").

``DIR/log.vkey``             the ledger's verifier keys, one per line (signed-note format);
``DIR/checkpoints/N.note``   every signed checkpoint, verbatim, named by tree size (20 digits);
``DIR/entries.jsonl``        ``{"seq": N, "entry": "<base64 of the exact entry bytes>"}`` per line;
``DIR/extra/leaf-hashes.bin``  the leaf hashes the database holds, 32 bytes each, in order —
                             *claims*, which the verifier trusts only for the prefix whose root
                             a signed checkpoint confirms, to name the exact entry altered.

A path ending in ``.tar`` or ``.tar.gz`` writes the same layout into a tar file.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from ledger.store import SealedLog

ProgressFn = Callable[[int, int], None]


def export_bundle(
    log: SealedLog, target: Path, *, progress: ProgressFn | None = None
) -> dict[str, int]:
    """Write the bundle of the whole log; returns counts (entries, checkpoints)."""
    target = Path(target)
    if target.name.endswith((".tar", ".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory() as tmp:
            counts = _export_dir(log, Path(tmp) / "bundle", progress)
            compress = target.name.endswith(("gz", "tgz"))
            with tarfile.open(target, "w:gz" if compress else "w") as tar:
                tar.add(Path(tmp) / "bundle", arcname=".")
        return counts
    return _export_dir(log, target, progress)


def _export_dir(log: SealedLog, target: Path, progress: ProgressFn | None) -> dict[str, int]:
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty")
    (target / "checkpoints").mkdir(parents=True, exist_ok=True)
    (target / "extra").mkdir(exist_ok=True)
    vkeys = log.meta("log_vkeys")
    if vkeys is None:
        raise LookupError("the log has no verifier keys recorded: was it initialised?")
    (target / "log.vkey").write_text(vkeys)
    checkpoints = log.checkpoints()
    for cp in checkpoints:
        (target / "checkpoints" / f"{cp.size:020d}.note").write_text(cp.note)
    size = checkpoints[-1].size if checkpoints else 0
    size = max(size, log.log_size())
    count = 0
    with (
        open(target / "entries.jsonl", "w", encoding="ascii") as entries,
        open(target / "extra" / "leaf-hashes.bin", "wb") as leaves,
    ):
        buffer = io.StringIO()
        for row in log.read_rows(0, size):
            entry = "" if row.entry is None else base64.b64encode(row.entry).decode()
            buffer.write(json.dumps({"seq": row.seq, "entry": entry}, separators=(",", ":")))
            buffer.write("\n")
            leaves.write(row.leaf_hash)
            count += 1
            if count % 2000 == 0:
                entries.write(buffer.getvalue())
                buffer = io.StringIO()
                if progress:
                    progress(count, size)
        entries.write(buffer.getvalue())
    if progress:
        progress(count, size)
    return {"entries": count, "checkpoints": len(checkpoints)}
