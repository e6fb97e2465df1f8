"""The pages and routes of the analysts' page (a contract, see DESIGN.md "The web page").

Every handler is thin: it reads the request, calls `wrapup_batch.app.Workspace` (in a thread:
the library is synchronous) and renders a template. Ids in URLs: a run's ledger id (digits)
or an upload's random token; nothing is ever reached by a path.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)

from wrapup_batch.app import (
    PROBLEM_STATUSES,
    NotFound,
    PageError,
    TooLarge,
    Upload,
    User,
    Workspace,
    is_fine,
)
from wrapup_batch.models import Status
from wrapup_batch.web.auth import checked_form, current_user, ensure_csrf
from wrapup_batch.web.render import render

#: Above this many rows, the analyst types the count to confirm an apply.
TYPE_TO_CONFIRM = 1000
STATUS_NAMES = tuple(s.value for s in Status)


def workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def user_of(request: Request) -> User:
    user = current_user(request)
    if user is None:  # the sign-in middleware lets no one through without a user
        raise HTTPException(401, "Sign in first.")
    return user


def _run_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 12 else None


async def _upload(request: Request) -> Upload:
    token = request.path_params["id"]
    return await run_in_threadpool(workspace(request).get_upload, token)


# -- upload ---------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    ws = workspace(request)
    return render(request, "upload.html", {"max_upload": ws.max_upload})


async def post_upload(request: Request) -> Response:
    ws = workspace(request)
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, "The upload must say its length (Content-Length).")
    if int(length) > ws.max_upload + 64 * 1024:  # the form's own fields are small
        return _too_large(request, ws)
    form = await checked_form(request)
    try:
        upload_file = form.get("file")
        if upload_file is None or isinstance(upload_file, str) or not upload_file.filename:
            raise PageError("Choose a CSV or XLSX file to upload.")
        user = user_of(request)

        def chunks() -> Any:
            while block := upload_file.file.read(1024 * 1024):
                yield block

        try:
            upload = await run_in_threadpool(ws.save_upload, upload_file.filename, chunks(), user)
        except TooLarge:
            return _too_large(request, ws)
        sheet = form.get("sheet")
        if isinstance(sheet, str) and sheet.strip():
            await run_in_threadpool(ws.choose_sheet, upload, sheet.strip())
    finally:
        await form.close()
    return RedirectResponse(f"/runs/{upload.token}/preview", 303)


def _too_large(request: Request, ws: Workspace) -> Response:
    return render(
        request, "error.html", {"title": "File too large", "message": ws.too_large_message()}, 413
    )


# -- preview --------------------------------------------------------------------------------


async def preview(request: Request) -> Response:
    ws = workspace(request)
    upload = await _upload(request)
    data = await run_in_threadpool(ws.preview, upload)
    to_apply = int(data.get("to_apply", 0))
    return render(
        request,
        "preview.html",
        {
            "upload": upload,
            "p": data,
            "to_apply": to_apply,
            "type_to_confirm": to_apply > TYPE_TO_CONFIRM,
            "problem_statuses": PROBLEM_STATUSES,
            "columns": ("conversation_id", "wrapup_code", "notes", "agent_id"),
        },
    )


async def preview_progress(request: Request) -> Response:
    """The "reading N rows" block of a large upload's preview, polled by htmx every second;
    once the preview is done, an empty answer that makes htmx reload the page."""
    ws = workspace(request)
    upload = await _upload(request)
    data = await run_in_threadpool(ws.preview, upload)
    if data.get("stage") == "reading":
        return render(request, "_reading.html", {"upload": upload, "p": data})
    return Response(status_code=200, headers={"HX-Refresh": "true"})


async def post_sheet(request: Request) -> Response:
    ws = workspace(request)
    upload = await _upload(request)
    form = await checked_form(request)
    sheet = str(form.get("sheet") or "").strip()
    if not sheet:
        raise PageError("Pick a sheet.")
    await run_in_threadpool(ws.choose_sheet, upload, sheet)
    return RedirectResponse(f"/runs/{upload.token}/preview", 303)


async def post_columns(request: Request) -> Response:
    ws = workspace(request)
    upload = await _upload(request)
    form = await checked_form(request)
    mapping = {k: str(v) for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}
    await run_in_threadpool(ws.map_columns, upload, mapping)
    return RedirectResponse(f"/runs/{upload.token}/preview", 303)


async def sample(request: Request) -> Response:
    ws = workspace(request)
    upload = await _upload(request)
    on_existing = request.query_params.get("on_existing", "skip")
    participant = request.query_params.get("participant", "last-agent")
    if on_existing not in ("skip", "replace") or participant not in ("last-agent", "all-agents"):
        raise PageError(
            "on_existing must be skip or replace; participant last-agent or all-agents."
        )
    try:
        data = await run_in_threadpool(
            ws.sample_lookup,
            upload,
            on_existing,  # type: ignore[arg-type]
            participant,  # type: ignore[arg-type]
        )
        error = ""
    except Exception as exc:  # shown in the fragment; the preview stays usable
        data, error = {}, _plain(exc)
    return render(request, "_sample.html", {"s": data, "error": error})


def _plain(exc: BaseException) -> str:
    from wrapup_batch.errors import WrapupBatchError

    if isinstance(exc, WrapupBatchError):
        return f"The sampled look-up could not run: {exc}"
    return "The sampled look-up could not run (the server log has the details)."


# -- apply, stop, resume, revert --------------------------------------------------------------


async def post_apply(request: Request) -> Response:
    ws = workspace(request)
    user = user_of(request)
    upload = await _upload(request)
    form = await checked_form(request)
    data = await run_in_threadpool(ws.preview, upload)
    to_apply = int(data.get("to_apply", 0))
    if to_apply > TYPE_TO_CONFIRM and str(form.get("confirm_count", "")).strip().replace(
        ",", ""
    ) != str(to_apply):
        raise PageError(
            f"To apply {to_apply:,} rows, type the number {to_apply} in the confirmation box."
        )
    run_id = await run_in_threadpool(
        lambda: ws.apply(
            upload,
            user,
            on_existing=str(form.get("on_existing") or "skip"),  # type: ignore[arg-type]
            participant=str(form.get("participant") or "last-agent"),  # type: ignore[arg-type]
        )
    )
    return RedirectResponse(f"/runs/{run_id}", 303)


async def post_stop(request: Request) -> Response:
    run_id = _int_id(request)
    await checked_form(request)
    await run_in_threadpool(workspace(request).stop, run_id, user_of(request))
    return RedirectResponse(f"/runs/{run_id}", 303)


async def post_resume(request: Request) -> Response:
    run_id = _int_id(request)
    await checked_form(request)
    new_id = await run_in_threadpool(workspace(request).resume, run_id, user_of(request))
    return RedirectResponse(f"/runs/{new_id}", 303)


async def post_revert(request: Request) -> Response:
    run_id = _int_id(request)
    await checked_form(request)
    new_id = await run_in_threadpool(workspace(request).revert, run_id, user_of(request))
    return RedirectResponse(f"/runs/{new_id}", 303)


def _int_id(request: Request) -> int:
    run_id = _run_id(request.path_params["id"])
    if run_id is None:
        raise NotFound("No such run.")
    return run_id


# -- a run: progress and results ----------------------------------------------------------------


async def run_page(request: Request) -> Response:
    ws = workspace(request)
    raw = request.path_params["id"]
    run_id = _run_id(raw)
    if run_id is None:  # an upload: its latest run, or its preview
        upload = await _upload(request)
        target = f"/runs/{upload.run_ids[-1]}" if upload.run_ids else f"/runs/{raw}/preview"
        return RedirectResponse(target, 303)
    view = await run_in_threadpool(ws.run_view, run_id, fresh=True)
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUS_NAMES:
        status = None
    rows: list[Any] = []
    matching = 0
    if view.state != "applying":
        rows, matching = await run_in_threadpool(ws.result_rows, run_id, status)
    return render(
        request,
        "run.html",
        {
            "run": view,
            "rows": rows,
            "matching": matching,
            "status": status,
            "is_fine": is_fine,
            "can_revert": view.kind == "run"
            and not view.dry_run
            and view.state != "applying"
            and view.counts.get("applied", 0) > 0,
        },
    )


async def events(request: Request) -> Response:
    ws = workspace(request)
    run_id = _int_id(request)
    await run_in_threadpool(ws.get_run, run_id)
    interval = float(request.app.state.sse_interval)

    async def stream() -> AsyncIterator[dict[str, str]]:
        while True:
            view = await run_in_threadpool(ws.run_view, run_id)
            html = bytes(render(request, "_progress.html", {"run": view}).body).decode()
            yield {"event": "progress", "data": html}
            yield {"event": "state", "data": json.dumps(view.api())}
            if view.state != "applying":
                yield {"event": "end", "data": view.state}
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(interval)

    return EventSourceResponse(stream(), ping=15)


async def results_csv(request: Request) -> Response:
    ws = workspace(request)
    run_id = _int_id(request)
    path = await run_in_threadpool(ws.results_file, run_id)
    return FileResponse(
        path,
        media_type="text/csv; charset=utf-8",
        filename=f"results-run-{run_id}.csv",
        background=BackgroundTask(os.unlink, path),
    )


async def rows_to_fix(request: Request) -> Response:
    """The run's rows to fix in the uploaded layout: a CSV as CSV, a workbook as .xlsx."""
    ws = workspace(request)
    run_id = _int_id(request)
    fix = await run_in_threadpool(ws.rows_to_fix, run_id)
    return FileResponse(
        fix.path,
        media_type=fix.media_type,
        filename=fix.filename,
        background=BackgroundTask(os.unlink, fix.path),
    )


async def to_fix_csv(request: Request) -> Response:
    """The first address of the rows to fix (CSV only then): it now leads to `rows_to_fix`."""
    return RedirectResponse(f"/runs/{_int_id(request)}/to-fix", status_code=303)


async def history(request: Request) -> Response:
    views = await run_in_threadpool(workspace(request).history)
    return render(request, "history.html", {"runs": views})


async def api_run(request: Request) -> Response:
    ws = workspace(request)
    raw = request.path_params["id"]
    run_id = _run_id(raw)
    if run_id is not None:
        view = await run_in_threadpool(ws.run_view, run_id)
        return JSONResponse(view.api())
    upload = await _upload(request)
    data = await run_in_threadpool(ws.preview, upload)
    counts = dict(data.get("counts") or {})
    return JSONResponse(
        {
            "id": upload.token,
            "state": "preview",
            "done": 0,
            "total": int(data.get("rows", 0)),
            "counts": counts,
            "started_by": upload.uploaded_by,
            "runs": upload.run_ids,
            # the preview's own stage: reading (a large file, rows so far in total), sheet,
            # columns, error or ready
            "preview": data.get("stage"),
        }
    )


async def signed_out(request: Request) -> Response:
    ensure_csrf(request)
    return render(request, "signed_out.html", {})
