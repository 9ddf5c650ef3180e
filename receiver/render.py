"""Render: one outbox row -> the message for one channel kind.

Label and annotation values are attacker-controlled text: escaped for HTML (email) and Slack.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from .config import Channel
from .store import Delivery

SMS_MAX = 160
_COMPONENT_KEYS = ("component", "service", "app", "job", "namespace")
_FIRST_LABELS = (
    "instance",
    "namespace",
    "pod",
    "container",
    "error_type",
    "category",
    "fingerprint",
)
_SKIP_LABELS = {"alertname", "severity", "__name__", "alertstate"}
_MAX_LABELS = 8
_DIGEST_LINES = 50


@dataclass(frozen=True)
class Notification:
    title: str
    body: str
    body_format: str  # text | markdown | html (apprise NotifyFormat values)
    notify_type: str  # info | success | warning | failure (apprise NotifyType values)
    url_params: dict[str, str] = field(default_factory=dict)  # merged into the channel URL


def _component_key(labels: dict[str, str]) -> str | None:
    return next((k for k in _COMPONENT_KEYS if labels.get(k)), None)


def component(labels: dict[str, str]) -> str:
    key = _component_key(labels)
    return labels[key] if key else ""


def title(d: Delivery, dash: str = "—") -> str:
    tag = "RESOLVED" if d.kind == "resolved" else d.severity.upper()
    name = d.labels.get("alertname", "alert")
    comp = component(d.labels)
    text = f"[{tag}] {name}" + (f" {dash} {comp}" if comp else "")
    if d.kind == "escalation":
        text += f" (escalation {d.step}: not acknowledged)"
    if d.kind == "resolved" and d.resolved_by:
        text += f" (resolved by {d.resolved_by})"
    return text


def _labels(d: Delivery) -> list[tuple[str, str]]:
    skip = _SKIP_LABELS | {_component_key(d.labels)}
    keys = [k for k in _FIRST_LABELS if k in d.labels and k not in skip]
    keys += sorted(k for k in d.labels if k not in skip and k not in keys)
    return [(k, d.labels[k]) for k in keys[:_MAX_LABELS]]


def _doc_links(d: Delivery) -> list[tuple[str, str]]:
    """Runbook (first of runbook_url/runbook) and dashboard links from the annotations."""
    links = []
    for key in ("runbook_url", "runbook"):
        if d.annotations.get(key):
            links.append(("Runbook", d.annotations[key]))
            break
    if d.annotations.get("dashboard_url"):
        links.append(("Dashboard", d.annotations["dashboard_url"]))
    return links


def _links(d: Delivery, receiver_url: str | None) -> list[tuple[str, str]]:
    links = _doc_links(d)
    if d.generator_url:
        links.append(("Source", d.generator_url))
    if d.kind != "resolved" and receiver_url:
        links.append(("Acknowledge", f"{receiver_url.rstrip('/')}/#ack-{d.fingerprint}"))
    return links


def _notify_type(d: Delivery) -> str:
    if d.kind == "resolved":
        return "success"
    if d.kind == "digest":
        return "warning"
    return "failure" if d.severity in ("critical", "high") else "warning"


def render(d: Delivery, ch: Channel, receiver_url: str | None = None) -> Notification:
    if d.kind == "digest":
        return _render_digest(d, ch)
    if d.group is not None:
        return _render_group(d, ch, receiver_url)
    ntype = _notify_type(d)
    summary = d.annotations.get("summary", "")
    description = d.annotations.get("description", "")

    if ch.kind == "sms":
        # GSM-7 friendly (a plain dash), title folded into the body: SMS plugins have no title
        text = title(d, "-")
        if summary:
            text += f": {summary}"
        runbook = next((u for n, u in _links(d, None) if n == "Runbook"), None)
        if runbook and len(title(d, "-")) + len(runbook) + 8 <= SMS_MAX:
            # the runbook is what the person woken up needs: clip the summary, keep the link
            text = _clip(text, SMS_MAX - len(runbook) - 1) + f" {runbook}"
        return Notification("", _clip(text, SMS_MAX), "text", ntype)

    if ch.kind == "email":
        e = html.escape
        parts = [f"<h2>{e(title(d))}</h2>"]
        if summary:
            parts.append(f"<p><strong>{e(summary)}</strong></p>")
        if description:
            parts.append(f"<p>{e(description)}</p>")
        rows = "".join(f"<tr><th align=left>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _labels(d))
        if rows:
            parts.append(f"<table>{rows}</table>")
        links = " | ".join(f'<a href="{e(u)}">{e(n)}</a>' for n, u in _links(d, receiver_url))
        if links:
            parts.append(f"<p>{links}</p>")
        parts.append(
            f"<p><small>started {e(d.starts_at)} · fingerprint {e(d.fingerprint)}</small></p>"
        )
        return Notification(title(d), "\n".join(parts), "html", ntype)

    esc = _escaper(ch)
    lines = []
    if summary:
        lines.append(esc(summary))
    if description and description != summary:
        lines.append(esc(description))
    labels = _labels(d)
    if labels:
        lines.append(", ".join(f"{esc(k)}={esc(v)}" for k, v in labels))
    for n, u in _links(d, receiver_url):
        lines.append(f"{n}: {esc(u)}")
    lines.append(f"started {d.starts_at} · fingerprint {d.fingerprint}")
    params: dict[str, str] = {}
    if ch.kind == "pagerduty":
        params = _pagerduty_params(
            ch.url, d.fingerprint, "resolve" if d.kind == "resolved" else "trigger", d.severity
        )
    fmt = "markdown" if ch.kind == "slack" else "text"
    return Notification(esc(title(d)), "\n".join(lines), fmt, ntype, params)


# PagerDuty's event severities; without this every failure-type notice would be `critical`
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}


def _pagerduty_params(url: str, fingerprint: str, action: str, sev: str) -> dict[str, str]:
    """The alert fingerprint is the dedup key, so the resolve closes the same incident.
    apprise's pagerduty:// takes `dedup`/`action`/`severity`; a json:// stand-in gets them as
    payload keys. A `severity` already in the channel URL wins."""
    parts = urlsplit(url)
    params = {"dedup": fingerprint, "action": action}
    if "severity" not in dict(parse_qsl(parts.query)):
        params["severity"] = PAGERDUTY_SEVERITY.get(sev, "warning")
    if parts.scheme.lower() in ("json", "jsons"):
        names = {"dedup": ":dedup_key", "action": ":event_action", "severity": ":severity"}
        return {names[k]: v for k, v in params.items()}
    return params


def _render_digest(d: Delivery, ch: Channel) -> Notification:
    items = d.digest or []
    statuses = Counter(
        "escalation" if i["kind"] == "escalation" else (i["status"] or "firing") for i in items
    )
    names = Counter(i["labels"].get("alertname", "alert") for i in items)
    head = f"[DIGEST] {len(items)} notifications held back by the rate limit of {ch.name}"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    if ch.kind == "sms":
        top = ", ".join(f"{n} x{c}" for n, c in names.most_common(5))
        return Notification(
            "", _clip(f"[DIGEST] {len(items)} held: {counts}. {top}", SMS_MAX), "text", "warning"
        )
    lines = []
    for i in items[:_DIGEST_LINES]:
        tag = "RESOLVED" if i["kind"] == "resolved" else str(i["severity"] or "unknown").upper()
        comp = component(i["labels"])
        what = f" (escalation {i['step']})" if i["kind"] == "escalation" else ""
        lines.append(
            f"[{tag}] {i['labels'].get('alertname', 'alert')}"
            + (f" — {comp}" if comp else "")
            + what
            + (f": {i['summary']}" if i.get("summary") else "")
        )
    if len(items) > _DIGEST_LINES:
        lines.append(f"... and {len(items) - _DIGEST_LINES} more (see /api/v1/alerts)")
    if ch.kind == "email":
        body = (
            f"<h2>{html.escape(head)}</h2><p>{html.escape(counts)}</p><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in lines)
            + "</ul>"
        )
        return Notification(head, body, "html", "warning")
    esc = _escaper(ch)
    return Notification(
        head,
        esc("\n".join([counts, *lines])),
        "markdown" if ch.kind == "slack" else "text",
        "warning",
    )


# -- group notifications (docs/receiver-groups.md) ----------------------------------------------


def group_title(d: Delivery, dash: str = "—") -> str:
    """`[CRITICAL] HighErrorRate — checkout: 3000 firing (+12 new, 3 resolved)`; a group of
    one alert reads like that alert."""
    g = d.group or {}
    tag = "RESOLVED" if d.kind == "resolved" else d.severity.upper()
    name = d.labels.get("alertname") or (
        ", ".join(f"{k}={v}" for k, v in sorted(g.get("group_labels", {}).items())) or "alerts"
    )
    comp = component(d.labels)
    text = f"[{tag}] {name}" + (f" {dash} {comp}" if comp else "")
    if d.kind != "resolved" and (g["firing"] != 1 or d.kind == "update"):
        text += f": {g['firing']} firing"
    if d.kind == "update":
        change = [f"+{g['joined']} new"] if g["joined"] else []
        change += [f"{g['resolved']} resolved"] if g["resolved"] else []
        text += f" ({', '.join(change)})" if change else ""
    if d.kind == "escalation":
        text += f" (escalation {d.step}: not acknowledged)"
    if d.kind == "resolved" and d.resolved_by:
        text += f" (resolved by {d.resolved_by})"
    return text


def _brief(a: dict, common_name: str | None) -> str:
    """One alert of a group by what tells it apart (pod=..., instance=...)."""
    labels = dict(a["labels"])
    name = labels.pop("alertname", None) if labels.get("alertname") != common_name else None
    labels.pop("severity", None)
    what = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())[:_MAX_LABELS])
    text = f"[{a['severity'].upper()}] " + " ".join(x for x in (name, what) if x)
    return text + (f": {a['summary']}" if a.get("summary") else "")


def _group_lines(d: Delivery) -> list[str]:
    """The body of a group message as plain lines (escaped by the caller)."""
    g = d.group or {}
    single = g.get("single")
    lines: list[str] = []
    summary = d.annotations.get("summary") or (single or {}).get("summary", "")
    if summary:
        lines.append(summary)
    if d.annotations.get("description"):
        lines.append(d.annotations["description"])
    if single is not None and d.kind != "resolved":
        labels = _labels(d)
        if labels:
            lines.append(", ".join(f"{k}={v}" for k, v in labels))
    elif d.kind != "resolved":
        counts = ", ".join(f"{n} {s}" for s, n in g["by_severity"])
        lines.append(f"{g['firing']} firing ({counts})")
        name = d.labels.get("alertname")
        lines.extend(f"• {_brief(a, name)}" for a in g["top"])
        if g["firing"] > len(g["top"]):
            lines.append(f"… and {g['firing'] - len(g['top'])} more (see /api/v1/alerts)")
    if g["resolved"] and (d.kind == "update" or g["resolved"] > 1):
        lines.append(f"Resolved: {g['resolved']}")
        lines.extend(f"✓ {_brief(a, d.labels.get('alertname'))}" for a in g["resolved_top"])
        if g["resolved"] > len(g["resolved_top"]):
            lines.append(f"… and {g['resolved'] - len(g['resolved_top'])} more resolved")
    return lines


def _group_links(d: Delivery, receiver_url: str | None) -> list[tuple[str, str]]:
    links = _doc_links(d)
    if d.kind != "resolved" and receiver_url:
        single = (d.group or {}).get("single")
        anchor = f"ack-{single['fingerprint']}" if single else f"ack-group-{d.fingerprint}"
        links.append(("Acknowledge", f"{receiver_url.rstrip('/')}/#{anchor}"))
    return links


def _group_footer(d: Delivery) -> str:
    single = (d.group or {}).get("single")
    text = f"group {d.fingerprint[:12]}"
    return text + (f" · fingerprint {single['fingerprint']}" if single else "")


def _render_group(d: Delivery, ch: Channel, receiver_url: str | None) -> Notification:
    ntype = _notify_type(d)
    lines = _group_lines(d)
    links = _group_links(d, receiver_url)
    if ch.kind == "sms":
        text = group_title(d, "-")
        g = d.group or {}
        detail = lines[0] if lines and (g.get("single") or d.annotations.get("summary")) else ""
        if not detail and g["top"] and d.kind != "resolved":
            detail = "; ".join(_brief(a, d.labels.get("alertname")) for a in g["top"][:3])
        if detail:
            text += f": {detail}"
        runbook = next((u for n, u in links if n == "Runbook"), None)
        if runbook and len(group_title(d, "-")) + len(runbook) + 8 <= SMS_MAX:
            # the runbook is what the person woken up needs: clip the detail, keep the link
            text = _clip(text, SMS_MAX - len(runbook) - 1) + f" {runbook}"
        return Notification("", _clip(text, SMS_MAX), "text", ntype)
    if ch.kind == "email":
        e = html.escape
        parts = [f"<h2>{e(group_title(d))}</h2>"]
        parts += [f"<p>{e(line)}</p>" for line in lines]
        if links:
            parts.append(" | ".join(f'<a href="{e(u)}">{e(n)}</a>' for n, u in links))
        parts.append(f"<p><small>{e(_group_footer(d))}</small></p>")
        return Notification(group_title(d), "\n".join(parts), "html", ntype)
    esc = _escaper(ch)
    body = [esc(line) for line in lines] + [f"{n}: {esc(u)}" for n, u in links]
    body.append(_group_footer(d))
    params: dict[str, str] = {}
    if ch.kind == "pagerduty":  # one incident per group: the group id is the dedup key
        action = "resolve" if d.kind == "resolved" else "trigger"
        params = _pagerduty_params(ch.url, d.fingerprint, action, d.severity)
    fmt = "markdown" if ch.kind == "slack" else "text"
    return Notification(esc(group_title(d)), "\n".join(body), fmt, ntype, params)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _slack_escape(s: str) -> str:
    # Slack's mrkdwn: &, < and > must be escaped, or <!channel> in a label would ping everyone
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escaper(ch: Channel) -> Callable[[str], str]:
    """Text channels other than Slack take the text as it is."""
    return _slack_escape if ch.kind == "slack" else str


def test_notification(channel: Channel) -> Notification:
    """`send-test`: what a real notice on this channel looks like."""
    d = Delivery(
        id=0,
        channel=channel.name,
        kind="firing",
        step=0,
        attempts=0,
        created_at=0.0,
        fingerprint="0000000000000000",
        status="firing",
        severity="low",
        labels={"alertname": "TailpageTest", "component": "tailpage-receiver"},
        annotations={"summary": "Test notification from tailpage-receiver send-test"},
        starts_at="now",
        generator_url=None,
        external_url=None,
    )
    return render(d, channel)
