"""The admin listener's status page: one L{Snapshot} as HTML an operator can read.

A self-contained page (its style inline, no script, no external asset) that
reloads itself every L{REFRESH} seconds.  Every value is escaped; the
snapshot holds no phone number or code to begin with.
"""

from __future__ import annotations

from html import escape
from typing import Iterable, Mapping

from msisdnd.api.status import Snapshot
from msisdnd.sms.status import timestamp

#: Seconds between two reloads of the page.
REFRESH = 10

#: The admin listener's other URLs, listed at the foot of the page.
ADMIN_URLS = (("/metrics", "Prometheus metrics"), ("/binds", "carriers and binds (JSON)"),
              ("/health", "carriers, Redis and unserved destinations (JSON)"))

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee}td.n{text-align:right}td.n,td.t{white-space:nowrap}
.up,.bound{color:#fff;background:#2e7d32}.down,.stopped{color:#fff;background:#c62828}
.reconnecting,.connecting,.binding,.starting,.unbinding,.unknown{background:#f9a825}
.meta span{margin-right:1.5em}.none{color:#888}
"""


def _e(value: object) -> str:
    return escape("-" if value is None else str(value), quote=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _counts(counts: Mapping[str, int]) -> str:
    shown = [f"{_e(k)} {v}" for k, v in sorted(counts.items()) if v]
    return ", ".join(shown) if shown else '<span class="none">none</span>'


def _table(headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="none">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _state(state: str) -> str:
    return f'<td class="{_e(state)}">{_e(state)}</td>'


def render(snapshot: Snapshot, last_minute: Mapping[tuple[str, ...], int],
           last_hour: Mapping[tuple[str, ...], int]) -> bytes:
    """The page for C{snapshot}; C{last_minute} and C{last_hour} are the
    growth of its counters (L{msisdnd.api.status.StatusBoard.recent})."""
    redis = snapshot.redis
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        f"<title>msisdnd {_e(snapshot.environment)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>msisdnd {_e(snapshot.version)}</h1>",
        '<p class="meta">'
        f'<span>environment <b id="environment">{_e(snapshot.environment)}</b></span>'
        f'<span>up <b id="uptime">{_duration(snapshot.taken - snapshot.started)}</b></span>'
        f'<span>Redis <b id="redis" class="{_e(redis["state"])}">{_e(redis["state"])}</b> '
        f'{_e(redis["address"])} since {_e(timestamp(redis["since"]))}, '
        f'{snapshot.redis_errors} errors</span>'
        f"<span>at {_e(timestamp(snapshot.taken))}</span></p>",
    ]
    parts += _carriers(snapshot, last_minute)
    parts += _binds(snapshot)
    parts += _verifications(snapshot, last_hour)
    parts += _limits(snapshot)
    parts += _webhooks(snapshot)
    parts.append("<h2>Admin URLs</h2><ul>" + "".join(
        f'<li><a href="{_e(url)}">{_e(url)}</a> {_e(what)}</li>' for url, what in ADMIN_URLS)
        + "</ul>")
    parts.append(f'<p class="none">This page reloads every {REFRESH} s.</p></body></html>')
    return "\n".join(parts).encode("utf-8")


def _carriers(snapshot: Snapshot, last_minute: Mapping[tuple[str, ...], int]) -> list[str]:
    rows = []
    readings = {r.name: r for r in snapshot.readings}
    for carrier in snapshot.carriers:
        name = carrier["name"]
        reading = readings[name]
        outage = carrier["down_since"] or carrier["reconnecting_since"]
        minute = {status: count for (kind, who, status), count in last_minute.items()
                  if kind == "submit" and who == name}
        last_submit = (f"{_duration(reading.last_submit_age)} ago"
                       if reading.last_submit_age is not None else None)
        rows.append(
            f'<tr class="carrier" data-carrier="{_e(name)}" data-state="{_e(carrier["state"])}">'
            f"<td>{_e(name)}</td>{_state(carrier['state'])}"
            f"<td class=\"t\">{_e(carrier['since'])}</td><td class=\"t\">{_e(outage)}</td>"
            f"<td class=\"n\">{carrier['queue_depth']}</td><td class=\"t\">{_e(last_submit)}</td><td>{_counts(minute)}</td>"
            f"<td>{_counts(reading.outcomes)}</td><td>{_e(carrier['last_error'])}</td></tr>")
    out = ["<h2>Carriers</h2>", _table(
        ("carrier", "state", "since", "without a bind since", "queue", "last submit",
         "submits last minute", "submits since start", "last error"),
        rows, "No carrier is configured.")]
    if snapshot.unserved:
        out.append('<p id="unserved">Destinations without a live carrier: <b>'
                   + _e(", ".join(snapshot.unserved)) + "</b></p>")
    if snapshot.failovers:
        out.append("<p>Failovers (first choice &rarr; carrier taken): " + ", ".join(
            f"{_e(a)} &rarr; {_e(b)} {n}" for (a, b), n in sorted(snapshot.failovers.items()))
            + "</p>")
    return out


def _binds(snapshot: Snapshot) -> list[str]:
    rows = []
    for bind in snapshot.binds:
        rtt = bind["last_enquire_link_rtt"]
        rows.append(
            f'<tr class="bind" data-bind="{_e(bind["name"])}" data-state="{_e(bind["state"])}">'
            f"<td>{_e(bind['name'])}</td><td>{_e(bind['mode'])}</td>{_state(bind['state'])}"
            f"<td class=\"t\">{_e(bind['since'])}</td>"
            f"<td class=\"n\">{bind['in_flight']} / {bind['window']}</td>"
            f"<td class=\"n\">{bind['queue_depth']}</td>"
            f"<td class=\"n\">{_e(None if rtt is None else f'{rtt * 1000:.1f} ms')}</td>"
            f"<td class=\"n\">{bind['reconnects']}</td><td>{_e(bind['last_bind_status'])}</td>"
            f"<td>{_e(bind['last_error'])}</td></tr>")
    return ["<h2>Binds</h2>", _table(
        ("bind", "mode", "state", "since", "window in use", "queue", "enquire_link RTT",
         "reconnects", "last bind status", "last error"), rows, "No bind.")]


def _verifications(snapshot: Snapshot, last_hour: Mapping[tuple[str, ...], int]) -> list[str]:
    outcomes = ("started", "succeeded", "failed")
    methods = sorted({key[1] for key in last_hour if key[0] == "verification"})
    rows = [f"<tr><td>{_e(method)}</td>" + "".join(
        f'<td class="n">{last_hour.get(("verification", method, outcome), 0)}</td>'
        for outcome in outcomes) + "</tr>" for method in methods]
    mo = snapshot.mo_verifications
    return ["<h2>Verifications in the last hour</h2>",
            _table(("method", *outcomes), rows, "No verification yet."),
            f"<p>Silent-SMS requests since start: handled {mo.get('handled', 0)}, "
            f"dropped {mo.get('dropped', 0)}.</p>"]


def _limits(snapshot: Snapshot) -> list[str]:
    if snapshot.refusals is None:
        return []
    return ["<h2>Limits</h2>",
            f"<p>Refusals by limit since start: {_counts(snapshot.refusals)}</p>",
            f"<p>Pumping-guard blocks since start: {_counts(snapshot.blocks or {})}; "
            f"lifted by an operator: {snapshot.unblocks}</p>"]


def _webhooks(snapshot: Snapshot) -> list[str]:
    if not snapshot.webhooks:
        return []
    rows = [f"<tr><td>{_e(w['name'])}</td><td class=\"n\">{w['backlog']}</td>"
            f"<td>{_counts(w['outcomes'])}</td>"
            f"<td>{'over its bound' if w['over_bound'] else 'within its bound'}</td></tr>"
            for w in snapshot.webhooks]
    return ["<h2>Webhooks</h2>",
            _table(("webhook", "backlog", "since start", "event stream"), rows, "")]

