"""A large upload's preview, computed in a short-lived child process of the page.

Why a child process: the page's own process holds the official SDK (its import alone is about
200 MB: `PureCloudPlatformClientV2` imports all of its ~6,600 model modules from its package
`__init__`, so no part of it can be imported alone), and a preview streams every row of the
file through pandas and a scratch SQLite ledger, which takes another 100 MB or so for a
million rows and two cores' worth of CPU for a minute. In a child that never imports the SDK,
the page's memory stays where it was, its other pages stay quick (no GIL shared with the
preview), and the preview's memory goes back to the system when the child exits.

How: `PreviewJobs.follow(upload)` starts `python -m wrapup_batch.preview_job DIR` for the
upload's folder once (the org's codes, already read by the page, go to it as plain tuples on
its standard input; no credential does), then answers the stage `reading` with how far the
job has got. The child calls the same `Workspace.compute_preview` as a small upload's request
does, writes its progress to `DIR/preview.progress.json` every half second (a heartbeat) and
its result to `DIR/preview.json`, the preview the page keeps. A file the child cannot read
gives the CLI's message (the `error` stage), as in the request.

A page stopped in the middle stops its children; a page killed leaves them to finish. Either
way, the next look at the preview after a restart finds a result, a fresh heartbeat (a child
still at work: followed), or a stale one (started again): never "reading" forever. A child that
dies without a result (killed, out of memory) leaves a clear error on the page, not a retry
loop.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from wrapup_batch.codes import CodeCatalog, WrapupCode

if TYPE_CHECKING:
    from wrapup_batch.app import Upload

log = logging.getLogger(__name__)

RESULT_FILE = "preview.json"
PROGRESS_FILE = "preview.progress.json"
#: The folder of a preview's scratch ledger in the upload's (removed when the preview ends).
SCRATCH_PREFIX = "preview-scratch-"
#: How often the child writes its progress (the page polls every second).
HEARTBEAT_S = 0.5
#: A progress file this old belongs to a child that is gone: the preview is started again.
STALE_S = 15.0
#: How long a stopping page waits for its children to clean up after SIGTERM.
STOP_WAIT_S = 10.0
_HEAD_BYTES = 256 * 1024
UNEXPECTED = (
    "The preview could not be computed because of an unexpected error (the server's log has "
    "the details). Upload the file again to retry; if it happens again, tell whoever runs "
    "this page."
)
DIED = (
    "The preview stopped before it finished (its process ended with status {code}; it may "
    "have run out of memory). Upload the file again to retry, or split it into smaller files."
)

CodesFn = Callable[[], tuple[CodeCatalog | None, str]]


def layout_key(sheet: str | None, columns: Mapping[str, str]) -> str:
    """What of an upload's settings changes its preview: the sheet and the column mapping."""
    return json.dumps([sheet, sorted(columns.items())])


def estimate_rows(path: Path) -> int | None:
    """About how many data rows a CSV has, from the lines in its first 256 KB (None for a
    workbook, whose size says nothing about its rows)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return None
    lines = head.count(b"\n")
    if len(head) >= size:
        return max(0, lines - 1 + (0 if head.endswith(b"\n") or not head else 1))
    if lines < 2:
        return None
    return max(0, round(size * lines / len(head)) - 1)


def _write_json(path: Path, data: Any) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data), "utf-8")
    os.replace(part, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reading(progress: Mapping[str, Any]) -> dict[str, Any]:
    """The stage the page shows while a preview is computed."""
    started = float(progress.get("started") or time.time())
    return {
        "stage": "reading",
        "phase": str(progress.get("phase") or "starting"),
        "rows": int(progress.get("rows") or 0),
        "estimated_rows": progress.get("estimated_rows"),
        "seconds": round(max(0.0, time.time() - started), 1),
    }


def _at_work(progress: Mapping[str, Any]) -> bool:
    """Whether the child that wrote this progress is still at work: its heartbeat is fresh
    and, on this host, its process is alive."""
    if time.time() - float(progress.get("at") or 0) >= STALE_S:
        return False
    if progress.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(progress.get("pid") or 0), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return int(progress.get("pid") or 0) > 0


def _child_env() -> dict[str, str]:
    """The page's environment without the org's credentials: the child never calls the API."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GENESYSCLOUD_")}


# -- the page's side ----------------------------------------------------------------------------


@dataclass
class _Job:
    directory: Path
    layout: str
    started: float  # time.time()
    phase: str = "codes"
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    cancelled: bool = False


class PreviewJobs:
    """The preview jobs of one page: at most one child per upload (and layout)."""

    def __init__(self, codes: CodesFn, rate_limit: float) -> None:
        self._codes = codes
        self._rate_limit = rate_limit
        self._lock = threading.Lock()
        self._jobs: dict[Path, _Job] = {}
        self._closing = False

    def follow(self, upload: Upload) -> dict[str, Any]:
        """The upload's preview if it is done; else the stage `reading` with how far its job
        has got, the job started when none is at work on it."""
        key = upload.directory
        layout = layout_key(upload.sheet, upload.columns)
        with self._lock:
            done = _read_json(key / RESULT_FILE)
            if done is not None:
                return done
            job = self._jobs.get(key)
            if job is not None and job.layout != layout:  # another sheet or mapping since
                self._cancel(job)
                job = None
            progress = _read_json(key / PROGRESS_FILE)
            if job is None:
                if progress is not None and progress.get("layout") == layout and _at_work(progress):
                    return _reading(progress)  # a child of the page before a restart, at work
                if self._closing:
                    return _reading({"phase": "starting"})
                job = self._start(upload, layout)
                progress = None
            child = job.process
            if progress is not None and child is not None and progress.get("pid") == child.pid:
                return _reading(progress)
            return _reading({"phase": job.phase, "started": job.started})

    def _start(self, upload: Upload, layout: str) -> _Job:
        (upload.directory / PROGRESS_FILE).unlink(missing_ok=True)
        for left in upload.directory.glob(SCRATCH_PREFIX + "*"):  # by a child killed mid-way
            shutil.rmtree(left, ignore_errors=True)
        job = _Job(upload.directory, layout, time.time())
        job.thread = threading.Thread(
            target=self._work, args=(job,), name="wrapup-web-preview", daemon=True
        )
        self._jobs[job.directory] = job
        job.thread.start()
        return job

    def _work(self, job: _Job) -> None:
        try:
            catalog, codes_error = self._codes()
            payload = {
                "layout": job.layout,
                "started": job.started,
                "rate_limit": self._rate_limit,
                "codes_error": codes_error,
                "codes": None
                if catalog is None
                else [[c.id, c.name, c.division_id, c.division_name] for c in catalog],
            }
            with self._lock:
                if job.cancelled:
                    return
                job.process = subprocess.Popen(
                    [sys.executable, "-m", "wrapup_batch.preview_job", str(job.directory)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    env=_child_env(),
                    cwd=job.directory,
                    start_new_session=True,  # Ctrl-C on the page reaches it through close()
                )
                job.phase = "starting"
            job.process.communicate(json.dumps(payload).encode("utf-8"))
            code = job.process.returncode
            if not job.cancelled and not (job.directory / RESULT_FILE).exists():
                log.error("the preview in %s ended with status %s, no result", job.directory, code)
                _write_json(job.directory / RESULT_FILE, _error(DIED.format(code=code)))
        except Exception as exc:  # the page must show something: never "reading" forever
            log.error("the preview in %s failed: %s", job.directory, exc, exc_info=exc)
            if not job.cancelled:
                _write_json(job.directory / RESULT_FILE, _error(UNEXPECTED))
        finally:
            with self._lock:
                if self._jobs.get(job.directory) is job:
                    del self._jobs[job.directory]

    def _cancel(self, job: _Job) -> None:
        job.cancelled = True
        if job.process is not None and job.process.poll() is None:
            job.process.terminate()
        if self._jobs.get(job.directory) is job:
            del self._jobs[job.directory]

    def close(self) -> None:
        """Stop every child (each removes its scratch ledger); the next page starts them
        again when their previews are looked at."""
        with self._lock:
            self._closing = True
            jobs = list(self._jobs.values())
            for job in jobs:
                self._cancel(job)
        deadline = time.monotonic() + STOP_WAIT_S
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if job.process is not None and job.process.poll() is None:
                job.process.kill()
                job.process.wait()


def _error(message: str) -> dict[str, Any]:
    return {"stage": "error", "error": message}


# -- the child's side ---------------------------------------------------------------------------


class _Heartbeat:
    """Writes the child's progress to the progress file every HEARTBEAT_S."""

    def __init__(self, path: Path, layout: str, started: float, estimated_rows: int | None) -> None:
        self._path = path
        self._state: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "layout": layout,
            "phase": "starting",
            "rows": 0,
            "estimated_rows": estimated_rows,
            "started": started,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="preview-heartbeat", daemon=True)

    def update(self, phase: str, rows: int) -> None:
        self._state = {**self._state, "phase": phase, "rows": rows}

    def start(self) -> None:
        self._write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def _write(self) -> None:
        try:
            _write_json(self._path, {**self._state, "at": time.time()})
        except OSError as exc:  # the upload was deleted: the result cannot be kept either
            log.warning("cannot write the preview's progress: %s", exc)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds: the scratch ledger is removed, nothing kept


def main(argv: list[str] | None = None) -> int:
    """`python -m wrapup_batch.preview_job DIR`, the job on standard input (JSON)."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="wrapup-batch preview: %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_signal)
    directory = Path(args[0])
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    from wrapup_batch.app import Upload, Workspace

    upload = Upload(directory=directory, **json.loads((directory / "meta.json").read_text("utf-8")))
    layout = str(job["layout"])
    codes = job.get("codes")
    catalog = None if codes is None else CodeCatalog(WrapupCode(*c) for c in codes)
    codes_error = str(job.get("codes_error") or "")
    started = float(job.get("started") or time.time())  # when the page started the job
    heartbeat = _Heartbeat(directory / PROGRESS_FILE, layout, started, estimate_rows(upload.path))
    heartbeat.start()
    try:
        try:
            result = Workspace.compute_preview(
                upload,
                lambda: (catalog, codes_error),
                rate_limit=float(job["rate_limit"]),
                progress=heartbeat.update,
            )
        except Exception:  # a bug, not the file (the file's problems are the error stage)
            log.exception("the preview in %s failed", directory)
            result = _error(UNEXPECTED)
        finally:
            heartbeat.stop()
        now = _read_json(directory / "meta.json") or {}
        if layout_key(now.get("sheet"), now.get("columns") or {}) == layout:
            _write_json(directory / RESULT_FILE, result)  # else: another sheet or mapping
    finally:  # stopped or done: no heartbeat left for a page to wait on
        (directory / PROGRESS_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
