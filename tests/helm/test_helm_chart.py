"""The chart rendered by Helm's engine: valid objects, wired together, secrets kept secret."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from helmkit import (
    ALL_ON,
    CHART,
    NAMESPACE,
    POSTGRES_HA,
    RELEASE,
    ROOT,
    all_containers,
    find,
    one,
    pod_specs,
    validate_kubernetes,
    validate_operator,
)

RECEIVER = f"{RELEASE}-tailpage-receiver"
AMC = f"{RELEASE}-tailpage"  # the main AlertmanagerConfig; {AMC}-heartbeat is the heartbeat's
SECRET_WORDS = ("sekret",)  # every secret in ALL_ON contains it
OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        _merge(out, copy.deepcopy(part))
    return out


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def receiver_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "ConfigMap", RECEIVER)["data"]["receiver.yaml"])


# --- lint and schema -------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_ON, POSTGRES_HA], ids=["defaults", "all-on", "ha"])
def test_lint_strict_has_no_findings_beyond_info(values: dict[str, Any] | None) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.29.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_versions_agree_with_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert values["image"]["tag"] == project["version"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"receiver": {"replicaCont": 2}}, "replicaCont"),
        ({"receiver": {"store": {"type": "mysql"}}}, "/receiver/store/type"),
        ({"exporter": {"logs": {"source": "syslog"}}}, "/exporter/logs/source"),
        ({"receiver": {"config": {"store": "sqlite:///x"}}}, "/receiver/config"),
        ({"podMonitor": {"interval": "30 seconds"}}, "/podMonitor/interval"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], message: str) -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(err.value)


# --- every object valid ----------------------------------------------------------------------


def test_defaults_render_a_valid_receiver(render) -> None:
    docs = render(None)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Secret", "Service",
                     "ServiceAccount"]
    assert validate_kubernetes(docs) == []


def test_every_optional_part_renders_valid_objects(render) -> None:
    docs = render(ALL_ON)
    kinds = {d["kind"] for d in docs}
    assert kinds >= OPERATOR_KINDS | {"PodDisruptionBudget", "NetworkPolicy", "Deployment",
                                      "PersistentVolumeClaim"}
    assert len(find(docs, "Deployment")) == 2  # receiver and demo
    assert sorted(validate_kubernetes(docs)) == sorted(
        d["kind"] for d in docs if d["kind"] in OPERATOR_KINDS)
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            validate_operator(doc)


def test_postgresql_ha_renders_valid_objects(render) -> None:
    docs = render(POSTGRES_HA)
    assert validate_kubernetes(docs) == []
    assert find(docs, "PersistentVolumeClaim") == []


def test_operator_validation_catches_a_misspelt_field(render) -> None:
    amc = copy.deepcopy(one(render(ALL_ON), "AlertmanagerConfig", AMC))
    http = amc["spec"]["receivers"][0]["webhookConfigs"][0]["httpConfig"]
    http["authorisation"] = http.pop("authorization")
    with pytest.raises(AssertionError, match="authorisation"):
        validate_operator(amc)


@pytest.mark.parametrize("values", [None, ALL_ON, POSTGRES_HA], ids=["defaults", "all-on", "ha"])
def test_objects_are_wired_together(render, values: dict[str, Any] | None) -> None:
    """Mounts name volumes that exist, ConfigMaps/Secrets/PVCs referenced are rendered, probes
    use declared ports, $(VAR) in args refers to a declared env var, Services select pods."""
    docs = render(values)
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    external_secrets = {"pg-app"}
    for name, spec in pod_specs(docs):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(spec):
            ports = {p["name"] for p in c.get("ports", [])}
            env = {e["name"] for e in c.get("env", [])}
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}/{c['name']} mounts unknown {m['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    assert c[probe]["httpGet"]["port"] in ports
            for arg in c.get("args", []):
                for var in re.findall(r"\$\((\w+)\)", arg):
                    assert var in env, f"{name}/{c['name']} uses $({var}) without env {var}"
        for v in volumes.values():
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in rendered
            if "secret" in v:
                sn = v["secret"]["secretName"]
                assert ("Secret", sn) in rendered or sn in external_secrets
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in rendered
    for svc in find(docs, "Service"):
        selected = [d for d in docs if d["kind"] == "Deployment"
                    and svc["spec"]["selector"].items()
                    <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1
        pod = selected[0]["spec"]["template"]["spec"]
        ports = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


# --- receiver --------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_ON, POSTGRES_HA], ids=["defaults", "all-on", "ha"])
def test_receiver_config_passes_the_receivers_own_schema(render, values) -> None:
    schema = yaml.safe_load((ROOT / "receiver" / "config.schema.json").read_text())
    cfg = receiver_config(render(values))
    jsonschema.validate(cfg, schema)
    deploy = one(render(values), "Deployment", RECEIVER)
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["run", "--config", "/etc/tailpage/receiver.yaml"]
    assert cfg["listen"] == args[args.index("--listen") + 1] == "0.0.0.0:9097"


def test_receiver_pod_is_locked_down(render) -> None:
    spec = one(render(ALL_ON), "Deployment", RECEIVER)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert c["resources"]["limits"]["memory"]
    # The read-only root needs every written path on a volume: the store and /tmp.
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/var/lib/tailpage", "/tmp"} <= mounts


def test_secrets_reach_the_receiver_as_files_and_nowhere_else(render) -> None:
    docs = render(ALL_ON)
    secret = one(docs, "Secret", RECEIVER)
    assert set(secret["data"]) == {"webhook-token", "channel-slack", "channel-pagerduty"}
    for doc in docs:
        if doc["kind"] != "Secret":
            text = yaml.safe_dump(doc)
            assert not any(w in text for w in SECRET_WORDS), f"secret in {doc['kind']}"
    cfg = receiver_config(docs)
    spec = one(docs, "Deployment", RECEIVER)["spec"]["template"]["spec"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "secrets")
    vol = next(v for v in spec["volumes"] if v["name"] == "secrets")
    assert vol["secret"]["secretName"] == RECEIVER
    files = [cfg["auth"]["bearer_token_file"]] + [c["url_file"] for c in cfg["channels"].values()]
    for f in files:  # each *_file is a key of the mounted Secret
        assert Path(f).parent == Path(mount["mountPath"])
        assert Path(f).name in secret["data"]
    assert set(cfg["channels"]) == {"slack", "pagerduty"}
    assert cfg["routes"] == ALL_ON["receiver"]["routes"]
    assert cfg["delivery"] == {"workers": 2}


def test_generated_token_when_none_is_given(render) -> None:
    data = one(render(None), "Secret", RECEIVER)["data"]
    assert set(data) == {"webhook-token"}
    assert len(data["webhook-token"]) >= 40  # base64 of 40 random characters


def test_existing_secret_replaces_the_charts_own(render) -> None:
    docs = render(merged(ALL_ON, {"receiver": {"existingSecret": "pager-secrets",
                                               "auth": {"bearerToken": ""},
                                               "channels": {"slack": {}, "pagerduty": {}}}}))
    assert find(docs, "Secret") == []
    spec = one(docs, "Deployment", RECEIVER)["spec"]["template"]["spec"]
    assert next(v for v in spec["volumes"] if v["name"] == "secrets")["secret"][
        "secretName"] == "pager-secrets"
    cred = one(docs, "AlertmanagerConfig", AMC)["spec"]["receivers"][0]["webhookConfigs"][0][
        "httpConfig"]["authorization"]["credentials"]
    assert cred == {"name": "pager-secrets", "key": "webhook-token"}
    assert receiver_config(docs)["channels"]["slack"] == {
        "url_file": "/etc/tailpage/secrets/channel-slack"}


def test_basic_auth_everywhere(render) -> None:
    docs = render(merged(ALL_ON, {"receiver": {"auth": {"mode": "basic", "bearerToken": "",
                                                        "basic": {"password": "sekret-pw"}}}}))
    cfg = receiver_config(docs)
    assert cfg["auth"] == {"basic": {"username": "alertmanager",
                                     "password_file": "/etc/tailpage/secrets/basic-password"}}
    basic = one(docs, "AlertmanagerConfig", AMC)["spec"]["receivers"][0]["webhookConfigs"][0][
        "httpConfig"]["basicAuth"]
    user_secret = one(docs, "Secret", basic["username"]["name"])
    assert user_secret["stringData"]["username"] == "alertmanager"
    assert basic["password"] == {"name": RECEIVER, "key": "basic-password"}
    assert "basic-password" in one(docs, "Secret", RECEIVER)["data"]
    assert set(validate_kubernetes(docs)) == OPERATOR_KINDS
    validate_operator(one(docs, "AlertmanagerConfig", AMC))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"receiver": {"replicaCount": 2}},
         "receiver.replicaCount=2 needs receiver.store.type=postgresql"),
        ({"receiver": {"store": {"type": "postgresql"}}}, "needs receiver.store.postgresql.host"),
        ({"receiver": {"channels": {"slack": {}}}}, "receiver.channels.slack.url is empty"),
        ({"receiver": {"enabled": False}, "alertmanagerConfig": {"enabled": True}},
         "alertmanagerConfig.enabled needs receiver.enabled"),
    ],
)
def test_unsafe_combinations_fail_at_install(values: dict[str, Any], message: str) -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmRenderError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(err.value)


def test_sqlite_store_is_one_pod_on_a_claim(render) -> None:
    docs = render(None)
    deploy = one(docs, "Deployment", RECEIVER)
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"  # never two pods on one SQLite file
    pvc = one(docs, "PersistentVolumeClaim", RECEIVER)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert receiver_config(docs)["store"] == "sqlite:///var/lib/tailpage/receiver.db"


def test_persistence_off_uses_an_emptydir(render) -> None:
    docs = render({"receiver": {"persistence": {"enabled": False}}})
    assert find(docs, "PersistentVolumeClaim") == []
    spec = one(docs, "Deployment", RECEIVER)["spec"]["template"]["spec"]
    assert next(v for v in spec["volumes"] if v["name"] == "data") == {"name": "data",
                                                                       "emptyDir": {}}


def test_postgresql_store_for_replicas(render) -> None:
    docs = render(POSTGRES_HA)
    deploy = one(docs, "Deployment", RECEIVER)
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    cfg = receiver_config(docs)
    assert cfg["store"] == "postgresql://tailpage@pg-rw.db.svc:5432/tailpage?sslmode=prefer"
    spec = deploy["spec"]["template"]["spec"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "store-password")
    vol = next(v for v in spec["volumes"] if v["name"] == "store-password")
    assert vol["secret"]["secretName"] == "pg-app"
    assert cfg["store_password_file"] == f"{mount['mountPath']}/{vol['secret']['items'][0]['path']}"
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_postgresql_url_from_an_operator_secret(render) -> None:
    docs = render({"receiver": {"replicaCount": 2, "store": {
        "type": "postgresql", "postgresql": {"urlSecret": {"name": "pg-app", "key": "uri"}}}}})
    cfg = receiver_config(docs)
    assert cfg["store"] == "${TAILPAGE_STORE_URL}"  # expanded by the receiver at start
    assert "store_password_file" not in cfg
    env = one(docs, "Deployment", RECEIVER)["spec"]["template"]["spec"]["containers"][0]["env"]
    url = next(e for e in env if e["name"] == "TAILPAGE_STORE_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "pg-app", "key": "uri"}
    assert validate_kubernetes(docs) == []


def test_network_policy_admits_alertmanager_and_prometheus_only(render) -> None:
    np = one(render(ALL_ON), "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = np["spec"]["ingress"]
    names = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]}
    assert names == {"alertmanager", "prometheus"}
    assert {"port": 53, "protocol": "UDP"} in np["spec"]["egress"][0]["ports"]


# --- Prometheus Operator and Grafana objects ---------------------------------------------------


def test_alertmanager_config_posts_to_the_receiver_service(render) -> None:
    docs = render(ALL_ON)
    amc = one(docs, "AlertmanagerConfig", AMC)
    (hook,) = amc["spec"]["receivers"][0]["webhookConfigs"]
    svc = one(docs, "Service", RECEIVER)
    assert hook["url"] == f"http://{RECEIVER}.{NAMESPACE}.svc:{svc['spec']['ports'][0]['port']}/alerts"
    assert hook["sendResolved"] is True
    cred = hook["httpConfig"]["authorization"]["credentials"]
    assert cred["key"] in one(docs, "Secret", cred["name"])["data"]
    assert amc["spec"]["route"]["receiver"] == amc["spec"]["receivers"][0]["name"]
    assert amc["spec"]["route"]["matchers"] == ALL_ON["alertmanagerConfig"]["matchers"]


def test_monitors_select_what_the_chart_runs(render) -> None:
    docs = render(ALL_ON)
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service", RECEIVER)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["metadata"]["labels"]["release"] == "kps"
    pm = one(docs, "PodMonitor")
    demo = one(docs, "Deployment", f"{RELEASE}-tailpage-demo")
    pod = demo["spec"]["template"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for c in all_containers(pod["spec"]) for p in c.get("ports", [])}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert pm["spec"]["namespaceSelector"] == {"any": True}


def test_prometheus_rules_equal_the_rules_directory(render) -> None:
    files = sorted((ROOT / "rules").glob("*.yml"))
    assert files, "rules/*.yml missing"
    rules = find(render(ALL_ON), "PrometheusRule")
    by_source = {r["metadata"]["annotations"]["tailpage/source"]: r for r in rules}
    assert sorted(by_source) == [f"rules/{f.name}" for f in files]
    for f in files:
        rule = by_source[f"rules/{f.name}"]
        groups = yaml.safe_load(f.read_text())["groups"]
        for r in (r for g in groups for r in g["rules"] if r.get("alert") == "TailpageWatchdog"):
            r["labels"]["namespace"] = NAMESPACE  # the heartbeat route's operator matcher needs it
        assert rule["spec"]["groups"] == groups, f.name
        assert rule["metadata"]["labels"]["release"] == "kps"


def test_dashboard_configmaps_equal_the_dashboards_directory(render) -> None:
    files = sorted((ROOT / "dashboards").glob("*.json"))
    cms = [d for d in find(render(ALL_ON), "ConfigMap")
           if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(cms) == len(files)
    got = {k: v for cm in cms for k, v in cm["data"].items()}
    assert got == {f.name: f.read_text() for f in files}  # byte for byte
    assert all(cm["metadata"]["annotations"]["grafana_folder"] == "tailpage" for cm in cms)


def test_operator_objects_are_off_by_default(render) -> None:
    assert {d["kind"] for d in render(None)}.isdisjoint(OPERATOR_KINDS)


def test_notes_tell_what_to_do_next() -> None:
    with helm_python.Chart.load(CHART) as chart:
        out = chart.render(None, name=RELEASE, namespace=NAMESPACE)
    notes = out["tailpage/templates/NOTES.txt"]
    assert f"http://{RECEIVER}.{NAMESPACE}.svc:9097/alerts" in notes
    assert "webhook-token" in notes and "kubectl" in notes


def test_every_object_fits_the_annotation_limit_of_client_side_apply(render) -> None:
    """GitOps tools and `kubectl apply` keep a copy of the object in an annotation, and
    annotations are limited to 256 KiB in total: a dashboard ConfigMap past that cannot be
    applied that way (and ConfigMaps past 1 MiB not at all)."""
    for doc in render(ALL_ON):
        size = len(json.dumps(doc, separators=(",", ":")).encode())
        assert size < 256 * 1024, f"{doc['kind']}/{doc['metadata']['name']}: {size} bytes"
