"""Route: labels -> severity, channels and escalation steps."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config, EscalationStep, Route

SEVERITY_ALIASES = {
    "critical": "critical",
    "p0": "critical",
    "page": "critical",
    "high": "high",
    "p1": "high",
    "error": "high",
    "medium": "medium",
    "warning": "medium",
    "p2": "medium",
    "low": "low",
    "info": "low",
    "p3": "low",
}

SEVERITIES = ("critical", "high", "medium", "low", "unknown")  # what severity() returns

# With no `routes:` in the config: channel kinds (or names) per severity, using those that exist.
# An unknown or missing severity is treated as medium so it is never silently dropped.
DEFAULT_POLICY = {
    "critical": ("pagerduty", "sms", "slack", "email"),
    "high": ("slack", "email"),
    "medium": ("slack",),
    "low": (),
    "unknown": ("slack",),
}


def severity(labels: dict[str, str]) -> str:
    """critical | high | medium | low | unknown (bounded: it is a metric label)."""
    return SEVERITY_ALIASES.get(labels.get("severity", "").strip().lower(), "unknown")


@dataclass(frozen=True)
class Routed:
    severity: str
    channels: tuple[str, ...]
    escalation: tuple[EscalationStep, ...]


def _matches(route: Route, labels: dict[str, str], sev: str) -> bool:
    for key, want in route.match.items():
        have = labels.get(key, "")
        if key == "severity":  # aliases on both sides: `severity: P0` matches `critical`
            if SEVERITY_ALIASES.get(want.strip().lower(), want) != sev and want != have:
                return False
        elif have != want:
            return False
    # anchored like Alertmanager's match_re
    return all(rx.fullmatch(labels.get(key, "")) for key, rx in route.match_re.items())


def route(cfg: Config, labels: dict[str, str]) -> Routed:
    sev = severity(labels)
    if cfg.routes is None:
        wanted = DEFAULT_POLICY[sev]
        chans = tuple(
            name
            for kind in wanted
            for name, ch in cfg.channels.items()
            if name == kind or ch.kind == kind
        )
        return Routed(sev, tuple(dict.fromkeys(chans)), ())
    channels: list[str] = []
    steps: list[EscalationStep] = []
    for r in cfg.routes:
        if _matches(r, labels, sev):
            channels.extend(r.channels)
            steps.extend(r.escalate)
            if not r.cont:
                break
    return Routed(
        sev, tuple(dict.fromkeys(channels)), tuple(sorted(steps, key=lambda s: s.after_s))
    )
