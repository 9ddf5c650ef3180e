"""The whole path, with the real programs: a log line becomes a page.

One stack for the module (started once, killed in the finalizer): the exporter tailing a file
this test appends to, Debian's Prometheus (1 s scrape and evaluation, the repo's rules/*.yml
unchanged), Debian's Alertmanager (bearer token to the receiver), the receiver, and stand-ins for
PagerDuty, SMS, Slack (apprise json://) and email (aiosmtpd).

Every test uses its own `component` so the notifications it looks for are its own. The tests
run in file order; the last one resolves every alert the others raised. The high-severity burst
starts with the stack: HighErrorRatio keeps the shipped `for: 5m`, so Prometheus itself fires it
about five minutes later, while the other tests run and then the high test waits.

At the end the module writes test-output/e2e/path.json: every notification expected on every
channel (firing, escalation, resolution) against what the stand-ins received.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import (
    CHANNELS,
    Alertmanager,
    DrillReport,
    Exporter,
    ProcGroup,
    Prometheus,
    Receiver,
    Sinks,
    append,
    log_line,
    machine,
    metric_sum,
    save_report,
    start_alertmanager,
    start_exporter,
    start_prometheus,
    start_receiver,
    wait_until,
)

pytestmark = pytest.mark.slow

RUNBOOK = "https://github.com/tailpage/tailpage/blob/main/docs/runbook.md#"
ESCALATE_AFTER = 5.0  # seconds; the shipped example says 15m
HIGH_COMP = "login-gw"
HIGH_FOR = 300.0  # HighErrorRatio's `for: 5m` in rules/tailpage-errors.yml, not shortened


class Traffic:
    """The high-severity burst, then steady traffic with errors above 5% of the lines.

    A burst of security errors (severity high) starts HighErrorRatio's pending state; one error
    and ten info lines a second keep the ratio at ~9% so the alert stays pending for its 5 minutes.
    The lines carry no duration, so they are not requests: with durations, 9% failed requests
    for minutes also burn the SLO budget and rightly page (ErrorBudgetBurnFast, critical).
    """

    def __init__(self, log: Path) -> None:
        self.log = log
        self.stop_ev = threading.Event()
        self.errors = 0
        self.started = time.time()
        self.thread = threading.Thread(target=self._run, name="e2e-traffic", daemon=True)

    def _error(self) -> str:
        return log_line("error", "unauthorized access attempt from 192.168.7.10", HIGH_COMP,
                        error_type="UnauthorizedAccess")

    def _run(self) -> None:
        for _ in range(3):  # the burst, over several scrapes so rate() has two samples
            append(self.log, self._error() * 60)
            self.errors += 60
            self.stop_ev.wait(1.2)
        info = log_line("info", "login ok", HIGH_COMP)
        while not self.stop_ev.wait(1.0):
            append(self.log, self._error() + info * 10)
            self.errors += 1

    def start(self) -> Traffic:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_ev.set()
        self.thread.join(timeout=10)


@dataclass
class Stack:
    group: ProcGroup
    sinks: Sinks
    receiver: Receiver
    alertmanager: Alertmanager
    exporter: Exporter
    prometheus: Prometheus
    log: Path
    traffic: Traffic
    # key (component or alert name) -> {channel: firing notices expected}, for the resolution
    # test and the path report; escalations count as firing notices
    told: dict[str, dict[str, int]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # latencies for path.json


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-path")
    group, sinks = ProcGroup(root), Sinks()
    log = root / "app.log"
    log.touch()
    failed_before = request.session.testsfailed
    traffic = None
    t0 = time.monotonic()
    try:
        receiver = start_receiver(group, sinks, escalate_after=f"{ESCALATE_AFTER:g}s")
        am = start_alertmanager(group, receiver.port)
        exporter = start_exporter(group, log)
        prom = start_prometheus(group, exporter.port, [am.port])
        wait_until(lambda: prom.query('up{job="app"} == 1'), 30, what="Prometheus scraping")
        traffic = Traffic(log).start()
        st = Stack(group, sinks, receiver, am, exporter, prom, log, traffic)
        yield st
        write_path_report(request, st, time.monotonic() - t0,
                          request.session.testsfailed != failed_before)
    finally:
        if traffic is not None:
            traffic.stop()
        if request.session.testsfailed != failed_before:
            print(group.dump_logs())
        group.close()
        sinks.close()


def write_path_report(request, st: Stack, seconds: float, failed: bool) -> None:
    """Expected notices (firing + escalation, and one resolution per channel told) vs received."""
    r = DrillReport("path", "notifications", seconds=seconds)
    per: dict[str, dict[str, list[int]]] = {}
    for key, chans in st.told.items():
        for ch, n_firing in chans.items():
            notes = st.sinks.received(ch, key)
            got = {"firing": len(firing(notes)), "resolved": len(resolved(notes))}
            want = {"firing": n_firing, "resolved": 1}
            for kind in ("firing", "resolved"):
                r.written += want[kind]
                r.delivered += min(got[kind], want[kind])
                r.duplicated += max(0, got[kind] - want[kind])
                r.lost += max(0, want[kind] - got[kind])
            per.setdefault(key, {})[ch] = [got["firing"], got["resolved"]]
    told_keys = set(st.told)
    r.notes.update({
        "received_firing_resolved": per,
        "unexpected": sorted({f"{n.channel}: {n.text.strip()[:80]}" for n in st.sinks.received()
                              if not any(k in n.text or k in n.html for k in told_keys)}),
        **st.figures,
        "outcome": "failed" if failed else "passed",
        "machine": machine(),
    })
    save_report(request.config, r)


def firing(notes):
    """Firing notices and escalations (the receiver titles resolutions `[RESOLVED] ...`)."""
    return [n for n in notes if "[RESOLVED]" not in n.text]


def resolved(notes):
    return [n for n in notes if "[RESOLVED]" in n.text]


def prom_time(iso: str) -> float:
    """Prometheus' RFC 3339 timestamps carry nanoseconds; Python parses microseconds."""
    head, _, frac = iso.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")


def prom_alert(prom: Prometheus, alertname: str, component: str, state: str | None = None):
    for a in prom.alerts():
        if (a["labels"].get("alertname") == alertname and a["labels"].get("component") == component
                and (state is None or a["state"] == state)):
            return a
    return None


def carries(note, *wants: str) -> list[str]:
    """The wanted strings missing from a notification (title, body and HTML part)."""
    text = note.text + note.html
    return [w for w in wants if w not in text]


def test_fatal_line_pages_every_channel_within_30s(stack: Stack) -> None:
    comp = "payments"
    t0 = time.time()
    append(stack.log, log_line("fatal", "database connection failed: host db-3.internal port 5432",
                               comp, error_type="DatabaseConnectionError", request_id="req_1"))

    def all_told():
        got = {ch: firing(stack.sinks.received(ch, comp)) for ch in CHANNELS}
        return got if all(got.values()) else None

    got = wait_until(all_told, 30, what="a CriticalError notification on all four channels")
    latency = {ch: round(notes[0].at - t0, 2) for ch, notes in got.items()}
    stack.figures["fatal_line_to_notification_s"] = latency
    # nobody acks payments: its escalation step (sms, email) follows after ESCALATE_AFTER
    stack.told[comp] = {"pagerduty": 1, "slack": 1, "sms": 2, "email": 2}

    alert = prom_alert(stack.prometheus, "CriticalError", comp, "firing")
    assert alert is not None, "Prometheus should show CriticalError firing for payments"
    summary = alert["annotations"]["summary"]
    assert comp in summary
    for ch, notes in got.items():
        # SMS is 160 characters: the receiver clips the summary to keep the runbook link
        want_summary = summary[:40] if ch == "sms" else summary
        missing = carries(notes[0], "CriticalError", comp, want_summary,
                          RUNBOOK + "criticalerror")
        assert not missing, f"{ch} notification lacks {missing}:\n{notes[0].text}{notes[0].html}"
        assert len(notes) == 1, f"{ch} got {len(notes)} firing notices for one alert"
    assert len(got["sms"][0].text.strip()) <= 160
    print(f"write -> notification latency (s): {latency}")


def test_escalation_without_ack_and_none_after_ack(stack: Stack) -> None:
    """Two critical alerts at once: nobody acks `billing`, somebody acks `checkout` at once."""
    for comp in ("billing", "checkout"):
        append(stack.log, log_line("fatal", "database connection failed: host db-1 port 5432",
                                   comp, error_type="DatabaseConnectionError"))

    def told(comp):
        return all(firing(stack.sinks.received(ch, comp)) for ch in CHANNELS)

    stack.told["billing"] = {"pagerduty": 1, "slack": 1, "sms": 2, "email": 2}
    stack.told["checkout"] = dict.fromkeys(CHANNELS, 1)
    # ack checkout as soon as it is told, well inside its escalation delay
    wait_until(lambda: told("checkout"), 30, what="checkout delivered")
    fp = wait_until(lambda: find_fingerprint(stack.receiver.alerts(), component="checkout"), 10,
                    what="checkout in the receiver's API")
    status, body = stack.receiver.ack(fp, "e2e-oncall")
    assert status == 200, body
    t_ack = time.time()
    wait_until(lambda: told("billing"), 30, what="billing delivered")

    # The escalation step (sms, email) for billing comes after ESCALATE_AFTER.
    def escalated():
        return all(len(firing(stack.sinks.received(ch, "billing"))) >= 2 for ch in ("sms", "email"))

    wait_until(escalated, ESCALATE_AFTER + 20, what="billing escalated to sms and email")
    for ch in ("sms", "email"):
        esc = firing(stack.sinks.received(ch, "billing"))[1]
        assert "escalation" in esc.text, f"{ch}: the second notice should say it escalates"
    for ch in ("pagerduty", "slack"):  # not in the escalation step
        assert len(firing(stack.sinks.received(ch, "billing"))) == 1

    # checkout was acked well before its step was due; give the step its time and more.
    time.sleep(max(0.0, t_ack + ESCALATE_AFTER + 3 - time.time()))
    for ch in CHANNELS:
        n = len(firing(stack.sinks.received(ch, "checkout")))
        assert n == 1, f"{ch} got {n} notices for the acknowledged alert (escalated after ack?)"
    m = stack.receiver.metrics()
    assert metric_sum(m, "tailpage_receiver_escalations_total") >= 1
    acked = find_alert(stack.receiver.alerts(), component="checkout")
    assert "e2e-oncall" in str(acked), f"the API should record who acked: {acked}"


def test_info_lines_reach_nobody(stack: Stack) -> None:
    comp = "e2e-quiet"
    before = metric_sum(stack.exporter.metrics(), "tailpage_log_lines_total", level="info")
    append(stack.log, log_line("info", "request completed", comp, duration_ms=12.5) * 50)

    def scraped():
        res = stack.prometheus.query('sum(tailpage_log_lines_total{level="info"})')
        return res and float(res[0]["value"][1]) >= before + 50

    wait_until(scraped, 20, what="Prometheus scraped the info lines")
    time.sleep(5)  # evaluation (1 s) + group_wait (1 s) + delivery, with room
    assert not stack.sinks.received(None, comp)
    assert not [a for a in stack.prometheus.alerts() if a["labels"].get("component") == comp]


@pytest.mark.timeout(HIGH_FOR + 300)
def test_high_severity_burst_reaches_slack_and_email_only(stack: Stack) -> None:
    """Security errors (severity high) in a burst, then steady above 5% of the lines (Traffic,
    started with the stack). Prometheus holds HighErrorRatio pending for the rule's `for: 5m`,
    then fires it itself; Alertmanager routes it; the receiver tells Slack and email only."""
    comp = HIGH_COMP
    pending = wait_until(lambda: prom_alert(stack.prometheus, "HighErrorRatio", comp), 30,
                         what="HighErrorRatio pending for login-gw")
    assert pending["labels"]["severity"] == "high"
    assert prom_alert(stack.prometheus, "CriticalError", comp) is None
    # NewErrorKind (severity low) fired for the new fingerprint and reaches nobody.
    wait_until(lambda: prom_alert(stack.prometheus, "NewErrorKind", comp, "firing"), 20,
               what="NewErrorKind firing for login-gw")

    left = stack.traffic.started + HIGH_FOR + 120 - time.time()
    fired = wait_until(lambda: prom_alert(stack.prometheus, "HighErrorRatio", comp, "firing"),
                       max(left, 60), interval=1, what="Prometheus firing HighErrorRatio")
    stack.told["HighErrorRatio"] = {"slack": 1, "email": 1}
    got = wait_until(lambda: all(firing(stack.sinks.received(ch, "HighErrorRatio"))
                                 for ch in ("slack", "email")) and
                     {ch: firing(stack.sinks.received(ch, "HighErrorRatio"))
                      for ch in ("slack", "email")},
                     30, what="HighErrorRatio on slack and email")
    stack.figures["high_burst_to_firing_s"] = round(
        prom_time(fired["activeAt"]) + HIGH_FOR - stack.traffic.started, 1)
    # Prometheus fires at activeAt (start of pending) + `for`; the delay after that is the path's
    due = prom_time(fired["activeAt"]) + HIGH_FOR
    stack.figures["high_for_elapsed_to_notification_s"] = {
        ch: round(notes[0].at - due, 2) for ch, notes in got.items()}
    summary = fired["annotations"]["summary"]
    for ch, notes in got.items():
        missing = carries(notes[0], "HighErrorRatio", comp, summary, RUNBOOK + "higherrorratio")
        assert not missing, f"{ch} notification lacks {missing}"
    time.sleep(3)  # room for a wrong notification to arrive
    for ch in ("pagerduty", "sms"):
        assert not stack.sinks.received(ch, comp), f"{ch} must not hear about severity high"
    assert not stack.sinks.received(None, "NewErrorKind")
    for ch in ("slack", "email"):
        assert len(firing(stack.sinks.received(ch, "HighErrorRatio"))) == 1


def test_resolution_reaches_every_channel_that_was_told(stack: Stack) -> None:
    """The errors stop.

    HighErrorRatio: traffic goes on without errors (a rush of info lines), the 5-minute error
    ratio drops under 5% and Prometheus resolves it.
    CriticalError looks back 5 minutes (increase over 5m, and new series over 5m), so on its own
    it resolves 5 minutes after the last fatal line: too long here. The exporter is restarted
    (SIGTERM, resumes at its checkpoint), which ends the error series, the same as a pod that
    restarts after its errors stopped; Prometheus then resolves the alerts.
    Alertmanager sends each resolution; the receiver tells every channel that carried the alert.
    """
    if not stack.told:
        pytest.skip("no alert was raised by the earlier tests")
    stack.traffic.stop()
    rush = log_line("info", "cache warmed", "e2e-rush")
    for _ in range(20):
        append(stack.log, rush * 1000)
    stack.exporter.proc.stop()
    stack.exporter.start()
    t0 = time.time()

    def missing():
        return [(key, ch) for key, chans in stack.told.items() for ch in chans
                if not resolved(stack.sinks.received(ch, key))]

    try:
        wait_until(lambda: not missing(), 60, interval=0.5,
                   what="resolutions on every channel told")
    except AssertionError:
        raise AssertionError(f"no resolution for {missing()}") from None
    stack.figures["errors_stop_to_last_resolution_s"] = round(
        max(n.at for n in resolved(stack.sinks.received())) - t0, 1)
    time.sleep(2)  # a duplicate resolution would show here
    # Nobody who was not told hears the resolution, and nobody hears it twice.
    for ch in ("pagerduty", "sms"):
        assert not resolved(stack.sinks.received(ch, "HighErrorRatio"))
    twice = [(key, ch) for key, chans in stack.told.items() for ch in chans
             if len(resolved(stack.sinks.received(ch, key))) > 1]
    assert not twice, f"resolution sent more than once: {twice}"


# -- the receiver's API, read without assuming more of its shape than issue 4 says ------------


def find_alert(doc, **labels):
    """The first object in the API answer whose labels include these."""
    if isinstance(doc, dict):
        lab = doc.get("labels")
        if isinstance(lab, dict) and all(lab.get(k) == v for k, v in labels.items()):
            return doc
        children = doc.values()
    elif isinstance(doc, list):
        children = doc
    else:
        return None
    for c in children:
        hit = find_alert(c, **labels)
        if hit is not None:
            return hit
    return None


def find_fingerprint(doc, **labels):
    hit = find_alert(doc, **labels)
    return hit.get("fingerprint") if hit else None
