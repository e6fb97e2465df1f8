"""JSON renderings of the emulator's data, in the Platform API's shapes (camelCase)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from wrapup_batch.emulator.model import (
    ALL_MEDIA_ARRAYS,
    MEDIA_ARRAYS,
    MEDIA_TYPES,
    Communication,
    Conversation,
    Participant,
    Wrapup,
    WrapupCode,
)

# Provider names Genesys shows per media.
_PROVIDERS = {
    "calls": "Edge",
    "callbacks": "PureCloud Callback",
    "emails": "PureCloud Email",
    "messages": "PureCloud Messaging",
    "socials": "PureCloud Social",
    "videos": "PureCloud Video",
    "cobrowsesessions": "PureCloud Cobrowse",
    "screenshares": "PureCloud Screen Share",
}


def error_body(
    status: int, code: str, message: str, params: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Genesys `ErrorBody` with a fresh contextId."""
    with_params = message
    for key, value in (params or {}).items():
        with_params = with_params.replace(value, "{" + key + "}")
    return {
        "message": message,
        "code": code,
        "status": status,
        "messageWithParams": with_params,
        "messageParams": dict(params or {}),
        "contextId": str(uuid.uuid4()),
        "details": [],
        "errors": [],
    }


def division_ref(division_id: str, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": division_id}
    if name is not None:
        out["name"] = name
    out["selfUri"] = f"/api/v2/authorization/divisions/{division_id}"
    return out


def code_json(code: WrapupCode, division_name: str) -> dict[str, Any]:
    return {
        "id": code.id,
        "name": code.name,
        "division": division_ref(code.division_id, division_name),
        "dateCreated": code.date_created,
        "createdBy": code.created_by,
        "selfUri": f"/api/v2/routing/wrapupcodes/{code.id}",
    }


def communication_json(comm: Communication, wrapup: Wrapup | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "state": comm.state,
        "id": comm.id,
        "direction": comm.direction,
        "held": False,
        "provider": _PROVIDERS[comm.media],
    }
    if comm.disconnect_type is not None:
        out["disconnectType"] = comm.disconnect_type
    if comm.start_alerting_time is not None:
        out["startAlertingTime"] = comm.start_alerting_time
    if comm.connected_time is not None:
        out["connectedTime"] = comm.connected_time
    if comm.disconnected_time is not None:
        out["disconnectedTime"] = comm.disconnected_time
    if comm.media == "calls":
        out.update(recording=False, muted=False, confined=False)
    elif comm.media == "messages":
        out["type"] = "webmessaging"
    elif comm.media == "emails":
        out.update(subject="Your request", messagesSent=1)
    elif comm.media == "socials":
        out.update(socialMediaHub="Twitter", socialUserName="@customer")
    elif comm.media in ("videos", "screenshares"):
        out["peerCount"] = 2
    elif comm.media == "cobrowsesessions":
        out["cobrowseRole"] = "viewer"
    if wrapup is not None:
        out["wrapup"] = wrapup.to_json()
    acw = comm.after_call_work
    if acw is not None:
        out["afterCallWork"] = {"state": acw.state}
        if acw.start_time is not None:
            out["afterCallWork"]["startTime"] = acw.start_time
        if acw.end_time is not None:
            out["afterCallWork"]["endTime"] = acw.end_time
    if comm.after_call_work_required is not None:
        out["afterCallWorkRequired"] = comm.after_call_work_required
    return out


def participant_json(
    p: Participant, wrapups: Mapping[str, Wrapup], latest: Wrapup | None, queues: Mapping[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": p.id}
    start, end = p.start_time, p.end_time
    if start is not None:
        out["startTime"] = start
    if end is not None:
        out["endTime"] = end
    connected = [c.connected_time for c in p.communications if c.connected_time]
    if connected:
        out["connectedTime"] = min(connected)
    out["name"] = p.name
    if p.user_id is not None:
        out["userId"] = p.user_id
        out["userUri"] = f"/api/v2/users/{p.user_id}"
    if p.queue_id is not None:
        out["queueId"] = p.queue_id
        if p.queue_id in queues:
            out["queueName"] = queues[p.queue_id]
    out["purpose"] = p.purpose
    out["participantType"] = "Internal" if p.purpose in ("agent", "user", "acd") else "External"
    out["wrapupRequired"] = p.wrapup_required
    if p.wrapup_prompt is not None:
        out["wrapupPrompt"] = p.wrapup_prompt
    if latest is not None:
        out["wrapup"] = latest.to_json()
    if p.start_acw_time is not None:
        out["startAcwTime"] = p.start_acw_time
    if p.end_acw_time is not None:
        out["endAcwTime"] = p.end_acw_time
    out["attributes"] = {}
    array_media = {key: media for media, key in MEDIA_ARRAYS.items()}
    for key in ALL_MEDIA_ARRAYS:
        media = array_media.get(key)
        out[key] = [
            communication_json(c, wrapups.get(c.id)) for c in p.communications if c.media == media
        ]
    return out


def conversation_json(
    conv: Conversation, wrapups: Mapping[str, Wrapup], queues: Mapping[str, str]
) -> dict[str, Any]:
    """The `Conversation` of `GET /api/v2/conversations/{id}`."""
    participants = []
    for p in conv.participants:
        comm_wrapups = [w for w in (wrapups.get(c.id) for c in p.communications) if w]
        latest = max(comm_wrapups, key=lambda w: w.seq) if comm_wrapups else None
        participants.append(participant_json(p, wrapups, latest, queues))
    out: dict[str, Any] = {"id": conv.id}
    if conv.start_time is not None:
        out["startTime"] = conv.start_time
    if conv.end_time is not None:
        out["endTime"] = conv.end_time
    out["participants"] = participants
    queue_refs = sorted({p.queue_id for p in conv.participants if p.queue_id})
    out["divisions"] = [
        {
            "division": division_ref(d),
            "entities": [{"id": q, "selfUri": f"/api/v2/routing/queues/{q}"} for q in queue_refs],
        }
        for d in conv.division_ids
    ]
    out["recordingState"] = "NONE"
    out["selfUri"] = f"/api/v2/conversations/{conv.id}"
    return out


def _segments(comm: Communication, wrapup: Wrapup | None, queue_id: str | None) -> list[Any]:
    """Analytics segments of one session: alert, interact, then wrapup when there is one.

    The wrapup segment runs from the end of the communication to the wrap-up's `endTime` (the
    one the POST gave, else the time of the POST: UNCONFIRMED). After-call work still going on
    (`afterCallWork.state` pending) is an open wrapup segment without a code; after-call work
    that ended without a code is a closed one without a code (UNCONFIRMED, both).
    """
    segments: list[dict[str, Any]] = []
    alert_start = comm.start_alerting_time
    if alert_start is not None:
        alert_end = comm.connected_time or comm.disconnected_time
        segments.append(_segment(alert_start, alert_end, "alert", queue_id))
    if comm.connected_time is not None:
        interact = _segment(comm.connected_time, comm.disconnected_time, "interact", queue_id)
        if comm.disconnect_type is not None and comm.disconnected_time is not None:
            interact["disconnectType"] = _analytics_disconnect(comm.disconnect_type)
        segments.append(interact)
    acw = comm.after_call_work
    if wrapup is not None and comm.disconnected_time is not None:
        seg = _segment(comm.disconnected_time, wrapup.end_time, "wrapup", queue_id)
        seg["wrapUpCode"] = wrapup.code
        if wrapup.notes:
            seg["wrapUpNote"] = wrapup.notes
        segments.append(seg)
    elif acw is not None and comm.disconnected_time is not None:
        if acw.state == "pending":
            segments.append(_segment(comm.disconnected_time, None, "wrapup", queue_id))
        elif acw.state == "complete" and acw.end_time is not None:
            segments.append(_segment(comm.disconnected_time, acw.end_time, "wrapup", queue_id))
    return segments


def _segment(start: str, end: str | None, kind: str, queue_id: str | None) -> dict[str, Any]:
    seg: dict[str, Any] = {"segmentStart": start}
    if end is not None:
        seg["segmentEnd"] = end
    seg["segmentType"] = kind
    if queue_id is not None:
        seg["queueId"] = queue_id
    return seg


def _analytics_disconnect(disconnect_type: str) -> str:
    """Conversations API disconnectType → analytics disconnectType (camelCase names)."""
    mapping = {
        "transfer": "transfer",
        "transfer.consult": "consultTransfer",
        "transfer.conference": "conferenceTransfer",
        "transfer.forward": "forwardTransfer",
        "transfer.noanswer": "noAnswerTransfer",
        "transport.failure": "transportFailure",
    }
    return mapping.get(disconnect_type, disconnect_type)


def analytics_json(conv: Conversation, wrapups: Mapping[str, Wrapup]) -> dict[str, Any]:
    """One conversation of `GET /api/v2/analytics/conversations/details?id=...`.

    `wrapups` holds only the wrap-ups analytics already knows about (see the lag knob).
    """
    participants = []
    for p in conv.participants:
        part: dict[str, Any] = {"participantId": p.id, "participantName": p.name}
        part["purpose"] = p.purpose
        if p.user_id is not None:
            part["userId"] = p.user_id
        part["sessions"] = [
            {
                "sessionId": c.id,
                "mediaType": MEDIA_TYPES[c.media],
                "direction": c.direction,
                "segments": _segments(c, wrapups.get(c.id), p.queue_id),
            }
            for c in p.communications
        ]
        participants.append(part)
    out: dict[str, Any] = {"conversationId": conv.id}
    if conv.start_time is not None:
        out["conversationStart"] = conv.start_time
    if conv.end_time is not None:
        out["conversationEnd"] = conv.end_time
    out["divisionIds"] = list(conv.division_ids)
    out["originatingDirection"] = conv.direction
    out["participants"] = participants
    return out
