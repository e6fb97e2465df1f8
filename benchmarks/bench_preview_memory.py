"""Where a preview's memory goes: `Workspace.compute_preview` of a generated CSV in this
process (which never imports the SDK), its RSS sampled every 50 ms and kept per step.

    .venv/bin/python benchmarks/bench_preview_memory.py [--rows 1000000]
        [--cache-kb 32768] [--chunk-rows 50000] [--json benchmarks/out/preview-memory.json]

`--cache-kb` and `--chunk-rows` try other settings than the CLI's (SQLite's page cache per
connection, rows per chunk) for the scratch ledger; the page uses the CLI's.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import OUT, emit, machine, scratch, write_input


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cache-kb", type=int, default=None)
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--json", type=Path, default=OUT / "preview-memory.json")
    args = parser.parse_args()
    from wrapup_batch.app import Upload, User, Workspace
    from wrapup_batch.codes import CodeCatalog, WrapupCode
    from wrapup_batch.ledger import dialect

    if args.cache_kb is not None:
        dialect.SQLITE_CACHE_KB = args.cache_kb
    if args.chunk_rows is not None:
        spec = Upload.spec
        chunk = int(args.chunk_rows)
        Upload.spec = lambda self: dataclasses.replace(spec(self), chunk_size=chunk)  # type: ignore[method-assign]
    result: dict[str, Any] = {"machine": machine(), "rows": args.rows}
    result["settings"] = {
        "sqlite_cache_kb": dialect.SQLITE_CACHE_KB,
        "chunk_rows": args.chunk_rows or 50_000,
    }
    with scratch("preview-memory-") as tmp:
        path = write_input(tmp / "input.csv", args.rows)
        workspace = Workspace(ledger=str(tmp / "ledger.db"), data_dir=tmp / "web", api=None)

        def chunks() -> Any:
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    yield block

        upload = workspace.save_upload("input.csv", chunks(), User("bench", "bench", True))
        catalog = CodeCatalog([WrapupCode("9c000001-0000-4000-8000-000000000000", "Sales")])
        result["rss_mb_before"] = rss_mb()
        steps: dict[str, float] = {}
        step = ["layout"]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                steps[step[0]] = max(steps.get(step[0], 0.0), rss_mb())
                time.sleep(0.05)

        def progress(phase: str, _rows: int) -> None:
            step[0] = phase

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        preview = Workspace.compute_preview(
            upload, lambda: (catalog, ""), rate_limit=300, progress=progress
        )
        seconds = time.perf_counter() - started
        step[0] = "after"
        time.sleep(0.2)
        done.set()
        sampler.join()
        workspace.close()
    assert preview["stage"] == "ready" and preview["rows"] == args.rows, preview.get("error")
    result["seconds"] = round(seconds, 1)
    result["rss_mb_by_step"] = steps
    result["peak_rss_mb"] = rss_mb("VmHWM")
    result["preview_json_bytes"] = len(repr(preview))
    emit(result, args.json)


if __name__ == "__main__":
    main()
