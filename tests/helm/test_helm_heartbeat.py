"""The chart's heartbeat: the watchdog's AlertmanagerConfig route and the receiver's
`heartbeats:` entry it pings (docs/receiver-heartbeats.md)."""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import pytest
import yaml
from helmkit import ALL_ON, CHART, NAMESPACE, RELEASE, find, one, validate_operator

from receiver import config as config_mod

RECEIVER = f"{RELEASE}-tailpage-receiver"
AMC, HEARTBEAT_AMC = f"{RELEASE}-tailpage", f"{RELEASE}-tailpage-heartbeat"


def with_heartbeat(**hb: Any) -> dict[str, Any]:
    values = copy.deepcopy(ALL_ON)
    values["alertmanagerConfig"]["heartbeat"] = hb
    return values


def receiver_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "ConfigMap", RECEIVER)["data"]["receiver.yaml"])


def test_watchdog_route_posts_to_the_receiver_often_and_never_resolved(render) -> None:
    docs = render(ALL_ON)
    hb, main = one(docs, "AlertmanagerConfig", HEARTBEAT_AMC), one(docs, "AlertmanagerConfig", AMC)
    validate_operator(hb)
    route = hb["spec"]["route"]
    # its own object: the main route's matchers (severity critical|high here) cannot drop it
    assert route["matchers"] == [{"name": "alertname", "value": "TailpageWatchdog",
                                  "matchType": "="}]
    assert (route["groupWait"], route["groupInterval"], route["repeatInterval"]) == (
        "0s", "30s", "1m")
    [receiver] = hb["spec"]["receivers"]
    assert route["receiver"] == receiver["name"]
    [hook] = receiver["webhookConfigs"]
    [main_hook] = main["spec"]["receivers"][0]["webhookConfigs"]
    assert hook["sendResolved"] is False and main_hook["sendResolved"] is True
    assert hook["url"] == main_hook["url"] and hook["httpConfig"] == main_hook["httpConfig"]
    assert hb["metadata"]["labels"]["alertmanagerConfig"] == "tailpage"


def test_receiver_gets_the_heartbeat_the_route_pings(render) -> None:
    docs = render(with_heartbeat(repeatInterval="2m", grace="90s", labels={"severity": "high"}))
    cfg = receiver_config(docs)
    assert cfg["heartbeats"] == [{
        "name": "alertmanager", "match": {"alertname": "TailpageWatchdog"},
        "period": "2m", "grace": "90s", "labels": {"severity": "high"},
    }]
    assert one(docs, "AlertmanagerConfig", HEARTBEAT_AMC)["spec"]["route"]["repeatInterval"] == "2m"
    # the receiver's own loader accepts it (channel URLs are files: give them)
    cfg["channels"] = {n: {"url": "console://"} for n in cfg["channels"]}
    cfg["auth"] = {"bearer_token": "x"}
    [hb] = config_mod.from_dict(cfg, "receiver.yaml").heartbeats
    assert (hb.period_s, hb.grace_s, hb.labels) == (120.0, 90.0, {"severity": "high"})


def test_receiver_config_heartbeats_are_kept_and_its_own_alertmanager_entry_wins(render) -> None:
    values = copy.deepcopy(ALL_ON)
    mine = [{"name": "alertmanager", "match": {"alertname": "Watchdog"}, "period": "5m"},
            {"name": "other", "match": {"alertname": "OtherPing"}}]
    values["receiver"]["config"]["heartbeats"] = mine
    assert receiver_config(render(values))["heartbeats"] == mine


def test_watchdog_rule_carries_the_release_namespace(render) -> None:
    rules = {r["metadata"]["name"]: r for r in find(render(ALL_ON), "PrometheusRule")}
    [rule] = rules[f"{RELEASE}-tailpage-watchdog"]["spec"]["groups"][0]["rules"]
    assert rule["labels"] == {"severity": "info", "namespace": NAMESPACE}
    # only the watchdog: the other rules take the namespace from their series
    others = [r for name, p in rules.items() if not name.endswith("watchdog")
              for g in p["spec"]["groups"] for r in g["rules"]]
    assert others and all("namespace" not in r.get("labels", {}) for r in others)


def test_heartbeat_off_or_routing_off_leaves_no_trace(render) -> None:
    off = render(with_heartbeat(enabled=False))
    assert [d["metadata"]["name"] for d in find(off, "AlertmanagerConfig")] == [AMC]
    assert "heartbeats" not in receiver_config(off)
    assert "heartbeats" not in receiver_config(render(None))
    assert find(render(None), "AlertmanagerConfig") == []


@pytest.mark.parametrize("hb, message", [
    ({"labels": {"alertname": "X"}}, "heartbeat/labels"),
    ({"repeatInterval": "1w"}, "heartbeat/repeatInterval"),
    ({"grace": "soon"}, "heartbeat/grace"),
    ({"alertnam": "X"}, "alertnam"),
])
def test_schema_rejects_bad_heartbeat_values(hb: dict[str, Any], message: str) -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.render(with_heartbeat(**hb), name=RELEASE, namespace=NAMESPACE)
    assert message in str(err.value)
