"""Append issue-9 conversations to the seed and add after-call work to a few sample ones."""
import json, re, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
data = json.loads(text)

ALICE, BOB, CAROL, ERIN = (f"b000000{n}-0000-4000-8000-000000000000" for n in (1, 2, 3, 5))
SUPPORT, SALES_Q = "f0000001-0000-4000-8000-000000000000", "f0000002-0000-4000-8000-000000000000"
HOME, SALES_DIV = "d0000001-0000-4000-8000-000000000000", "d0000002-0000-4000-8000-000000000000"
COMPLAINT = "9c000005-0000-4000-8000-000000000000"

def cid(n): return f"c{n:07d}-0000-4000-8000-000000000000"
def pid(n, p): return f"a{n:07d}-0000-4000-8000-{p:012d}"
def mid(n, p, c=1): return f"e{n:07d}-0000-4000-8000-{p * 10 + c:012d}"

def conv(n, comment, key, start, answered, ended, *, agent_user, agent=None, comm=None,
         queue=SUPPORT, division=HOME, extra=None, direction="inbound"):
    """customer, acd, agent (participant 3) of one media; times as given."""
    parts = [
        {"id": pid(n, 1), "purpose": "customer", "name": "Customer",
         key: [{"id": mid(n, 1), "state": "disconnected", "direction": direction,
                "connectedTime": start, "disconnectedTime": ended, "disconnectType": "endpoint"}]},
        {"id": pid(n, 2), "purpose": "acd", "name": "Support", "queueId": queue,
         key: [{"id": mid(n, 2), "state": "disconnected", "connectedTime": start,
                "disconnectedTime": answered, "disconnectType": "transfer"}]},
        {"id": pid(n, 3), "purpose": "agent", "userId": agent_user, "queueId": queue,
         "wrapupRequired": True, **(agent or {}),
         key: [{"id": mid(n, 3), "state": "disconnected", "direction": direction,
                "startAlertingTime": answered, "connectedTime": answered,
                "disconnectedTime": ended, "disconnectType": "client", **(comm or {})}]},
    ]
    out = {"_comment": comment, "id": cid(n), "divisionIds": [division]}
    if direction != "inbound":
        out["direction"] = direction
    out["participants"] = parts + (extra or [])
    return out

def day(h, m, s="00.000"): return f"2026-11-21T{h:02d}:{m:02d}:{s}Z"

new = [
    conv(20, "Issue 9: the call ended two minutes ago and its agent (Alice) is still in after-call work (afterCallWork pending; times relative to the emulator's start): not_ended, retried by the next run.",
         "calls", "now-9m", "now-8m", "now-2m", agent_user=ALICE,
         agent={"wrapupPrompt": "mandatory", "startAcwTime": "now-2m"},
         comm={"afterCallWork": {"state": "pending", "startTime": "now-2m"}, "afterCallWorkRequired": True}),
    conv(21, "Issue 9: an email answered five minutes ago whose agent (Carol) is still in after-call work (afterCallWork pending): not_ended.",
         "emails", "now-30m", "now-20m", "now-5m", agent_user=CAROL,
         agent={"wrapupPrompt": "mandatory", "startAcwTime": "now-5m"},
         comm={"afterCallWork": {"state": "pending", "startTime": "now-5m"}, "afterCallWorkRequired": True}),
    conv(22, "Issue 9: a social expression (socialExpressions, wrap-up path 'socials'; analytics mediaType 'unknown'), ended, no wrap-up.",
         "socialExpressions", day(8, 0), day(8, 1), day(8, 9), agent_user=BOB, queue=SALES_Q, division=SALES_DIV),
    conv(23, "Issue 9: a video session (path 'videos'), ended, no wrap-up.",
         "videos", day(9, 0), day(9, 1), day(9, 20), agent_user=ALICE),
    conv(24, "Issue 9: a cobrowse session (path 'cobrowsesessions'), ended, no wrap-up.",
         "cobrowsesessions", day(10, 0), day(10, 1), day(10, 12), agent_user=BOB),
    conv(25, "Issue 9: a screen share (path 'screenshares'), ended, no wrap-up.",
         "screenshares", day(11, 0), day(11, 1), day(11, 15), agent_user=CAROL),
    conv(26, "Issue 9: the agent's after-call work timed out: system code ININ-WRAP-UP-TIMEOUT, no agent choice: applied over it (its endTime kept).",
         "calls", day(12, 0), day(12, 1), day(12, 8), agent_user=ALICE,
         agent={"wrapupPrompt": "timeout", "startAcwTime": day(12, 8), "endAcwTime": day(12, 9)},
         comm={"afterCallWork": {"state": "complete", "startTime": day(12, 8), "endTime": day(12, 9)},
               "wrapup": {"code": "ININ-WRAP-UP-TIMEOUT", "name": "ININ-WRAP-UP-TIMEOUT", "endTime": day(12, 9)}}),
    conv(27, "Issue 9: the agent skipped the wrap-up: system code ININ-WRAP-UP-SKIPPED, no agent choice: applied over it.",
         "calls", day(13, 0), day(13, 1), day(13, 6), agent_user=BOB,
         agent={"wrapupPrompt": "optional", "startAcwTime": day(13, 6), "endAcwTime": day(13, 6, "20.000")},
         comm={"afterCallWork": {"state": "skipped", "startTime": day(13, 6), "endTime": day(13, 6, "20.000")},
               "wrapup": {"code": "ININ-WRAP-UP-SKIPPED", "name": "ININ-WRAP-UP-SKIPPED", "endTime": day(13, 6, "20.000")}}),
    conv(28, "Issue 9: an email whose chosen code was deleted since: system code ININ-WRAP-UP-DELETED, an agent's choice: skipped (replaced only with --on-existing replace).",
         "emails", day(14, 0), day(14, 5), day(14, 30), agent_user=CAROL,
         comm={"wrapup": {"code": "ININ-WRAP-UP-DELETED", "name": "ININ-WRAP-UP-DELETED", "endTime": day(14, 31)}}),
    conv(29, "Issue 9: an outbound campaign call the dialer wrapped up (ININ-OUTBOUND-PREVIEW-SKIPPED, one of the dialer's ININ-OUTBOUND-* codes): skipped, campaign rules rely on it.",
         "calls", day(15, 0), day(15, 0, "10.000"), day(15, 3), agent_user=ERIN, direction="outbound",
         comm={"wrapup": {"code": "ININ-OUTBOUND-PREVIEW-SKIPPED", "name": "ININ-OUTBOUND-PREVIEW-SKIPPED", "endTime": day(15, 3)}}),
    conv(30, "Issue 9: an outbound call with a 'station' participant carrying Erin's userId that ended after the agent: a station (like api, campaign, dialer, group, inbound, outbound, manual, voicesurveyflow) is never an agent, so the agent participant 3 is wrapped up.",
         "calls", day(16, 0), day(16, 0, "10.000"), day(16, 4), agent_user=ERIN, direction="outbound",
         extra=[{"id": pid(30, 4), "purpose": "station", "userId": ERIN, "name": "Erin's desk phone",
                 "calls": [{"id": mid(30, 4), "state": "disconnected", "connectedTime": day(16, 0),
                            "disconnectedTime": day(16, 4, "30.000"), "disconnectType": "endpoint"}]}]),
    conv(31, "Issue 9: ended a minute ago (times relative to the emulator's start); its agent (Bob) chose 'Complaint' thirty seconds ago. With the emulator's analytics lag on, analytics does not show that code yet: --lookup analytics must read it through the Conversations API and skip the row.",
         "calls", "now-10m", "now-9m", "now-1m", agent_user=BOB,
         agent={"wrapupPrompt": "mandatory", "startAcwTime": "now-1m", "endAcwTime": "now-30s"},
         comm={"afterCallWork": {"state": "complete", "startTime": "now-1m", "endTime": "now-30s"},
               "wrapup": {"code": COMPLAINT, "name": "Complaint", "notes": "Angry about the delay", "endTime": "now-30s"}}),
]
for c in new:
    assert c["id"] not in {x["id"] for x in data["conversations"]}

def block(obj):
    lines = json.dumps(obj, indent=2, ensure_ascii=False).splitlines()
    return "\n".join("    " + l for l in lines)

# after-call work on sample conversations: c0000001 (45 s of ACW), c0000004 (email, 70 s)
def patch(text, comm_id, participant_fields, comm_fields):
    i = text.index(f'"id": "{comm_id}"')
    # participant: insert after its "wrapupRequired": true that precedes this comm
    j = text.rindex('"wrapupRequired": true,', 0, i)
    k = j + len('"wrapupRequired": true,')
    indent = "\n          "
    ins = "".join(f'{indent}"{k_}": {json.dumps(v)},' for k_, v in participant_fields.items())
    text = text[:k] + ins + text[k:]
    i = text.index(f'"id": "{comm_id}"')
    end = text.index('"disconnectType": "client"', i) + len('"disconnectType": "client"')
    ins2 = "".join(f',\n              "{k_}": {json.dumps(v)}' for k_, v in comm_fields.items())
    return text[:end] + ins2 + text[end:]

text = patch(text, mid(1, 3), {"wrapupPrompt": "mandatory", "startAcwTime": "2026-11-20T08:07:45.300Z", "endAcwTime": "2026-11-20T08:08:30.300Z"},
             {"afterCallWork": {"state": "complete", "startTime": "2026-11-20T08:07:45.300Z", "endTime": "2026-11-20T08:08:30.300Z"}, "afterCallWorkRequired": True})
text = patch(text, mid(4, 3), {"wrapupPrompt": "optional", "startAcwTime": "2026-11-20T11:20:00.480Z", "endAcwTime": "2026-11-20T11:21:10.480Z"},
             {"afterCallWork": {"state": "complete", "startTime": "2026-11-20T11:20:00.480Z", "endTime": "2026-11-20T11:21:10.480Z"}, "afterCallWorkRequired": False})

tail = "\n  ]\n}\n"
assert text.endswith(tail), repr(text[-20:])
text = text[: -len(tail)] + ",\n" + ",\n".join(block(c) for c in new) + tail
json.loads(text)
open(path, "w", encoding="utf-8").write(text)
