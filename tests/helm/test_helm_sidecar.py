"""The exporter sidecar templates, included the way a user's chart includes them
(helm/examples/myapp), and in the chart's own demo workload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helmkit import (
    ALL_ON,
    RELEASE,
    ROOT,
    all_containers,
    one,
    parse,
    render_chart,
    validate_kubernetes,
)

APP = f"{RELEASE}-myapp"


def render_example(chart: Path, tailpage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return parse(render_chart(chart, {"tailpage": tailpage} if tailpage else None))


def pod(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return one(docs, "Deployment", name)["spec"]["template"]


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def test_example_users_deployment_gets_the_sidecar(example_chart: Path) -> None:
    docs = render_example(example_chart)
    # Only the user's objects: the dependency's receiver is switched off in the example.
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("Deployment", APP)]
    assert validate_kubernetes(docs) == []
    tpl = pod(docs, APP)
    assert tpl["metadata"]["labels"]["tailpage/exporter"] == "true"  # what the PodMonitor selects
    spec = tpl["spec"]
    assert "initContainers" not in spec
    containers = by_name(spec["containers"])
    assert list(containers) == ["app", "tailpage-exporter"]
    app, exporter = containers["app"], containers["tailpage-exporter"]
    volumes = by_name(spec["volumes"])
    assert volumes["tailpage-logs"] == {"name": "tailpage-logs", "emptyDir": {}}
    assert volumes["tailpage-checkpoints"] == {"name": "tailpage-checkpoints", "emptyDir": {}}
    assert "tmp" in volumes  # the user's own volumes stay
    # The app writes where the sidecar reads, and the sidecar cannot write there.
    app_mount = by_name(app["volumeMounts"])["tailpage-logs"]
    exp_mounts = by_name(exporter["volumeMounts"])
    assert app_mount["mountPath"] == exp_mounts["tailpage-logs"]["mountPath"] == "/var/log/app"
    assert exp_mounts["tailpage-logs"]["readOnly"] is True
    assert "readOnly" not in app_mount
    args = exporter["args"]
    assert args[0] == "run"
    assert args[args.index("--path") + 1] == "/var/log/app/*.log"
    assert args[args.index("--listen") + 1] == "0.0.0.0:9852"
    checkpoint = Path(args[args.index("--checkpoint") + 1])
    assert str(checkpoint.parent) == exp_mounts["tailpage-checkpoints"]["mountPath"]
    assert exporter["image"] == "registry.example.com/tailpage:0.1.0"  # the user's override
    assert exporter["command"] == ["tailpage-exporter"]
    assert by_name(exporter["ports"])["tailpage"]["containerPort"] == 9852
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "tailpage"}
    assert "readinessProbe" not in exporter  # a sidecar must not take the app out of its Service
    sc = exporter["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"


def test_example_as_a_native_sidecar(example_chart: Path) -> None:
    docs = render_example(example_chart, {"receiver": {"enabled": False},
                                          "exporter": {"nativeSidecar": True}})
    assert validate_kubernetes(docs) == []
    spec = pod(docs, APP)["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app"]
    (init,) = spec["initContainers"]
    assert init["name"] == "tailpage-exporter"
    assert init["restartPolicy"] == "Always"


def test_example_with_an_exporter_config(example_chart: Path) -> None:
    config = {"format": "json", "inputs": [{"path": "/var/log/app/*.log", "start_at": "beginning"}],
              "checkpoint": {"interval": "2s"}}
    docs = render_example(example_chart, {"receiver": {"enabled": False},
                                          "exporter": {"config": config}})
    assert validate_kubernetes(docs) == []
    cm = one(docs, "ConfigMap", f"{RELEASE}-tailpage-exporter")
    assert yaml.safe_load(cm["data"]["config.yaml"]) == config
    spec = pod(docs, APP)["spec"]
    exporter = by_name(spec["containers"])["tailpage-exporter"]
    args = exporter["args"]
    mount = by_name(exporter["volumeMounts"])["tailpage-exporter-config"]
    assert args[args.index("--config") + 1] == f"{mount['mountPath']}/config.yaml"
    assert "--path" not in args  # the config's inputs decide
    assert by_name(spec["volumes"])["tailpage-exporter-config"]["configMap"]["name"] == cm[
        "metadata"]["name"]


def test_a_config_without_inputs_still_tails_the_log_volume(example_chart: Path) -> None:
    """Without `inputs` the program would tail its built-in /var/log/app/*.log, wherever the
    chart mounted the logs: the chart passes the mount's glob instead."""
    docs = render_example(example_chart, {"receiver": {"enabled": False}, "exporter": {
        "config": {"format": "json"}, "logs": {"mountPath": "/srv/logs"}}})
    exporter = by_name(pod(docs, APP)["spec"]["containers"])["tailpage-exporter"]
    args = exporter["args"]
    assert args[args.index("--path") + 1] == "/srv/logs/*.log"
    assert "--config" in args
    assert by_name(exporter["volumeMounts"])["tailpage-logs"]["mountPath"] == "/srv/logs"


def test_exporter_config_passes_the_exporters_own_schema(render) -> None:
    schema = yaml.safe_load((ROOT / "exporter" / "config.schema.json").read_text())
    docs = render(ALL_ON)
    cm = one(docs, "ConfigMap", f"{RELEASE}-tailpage-demo-exporter")
    jsonschema.validate(yaml.safe_load(cm["data"]["config.yaml"]), schema)


def test_hostpath_source_reads_only_this_pods_app_logs(render) -> None:
    docs = render({"demo": {"enabled": True}, "exporter": {"logs": {"source": "hostPath"}}})
    assert validate_kubernetes(docs) == []
    spec = pod(docs, f"{RELEASE}-tailpage-demo")["spec"]
    exporter = by_name(spec["containers"])["tailpage-exporter"]
    args = exporter["args"]
    assert args[args.index("--path") + 1] == (
        "/var/log/pods/$(POD_NAMESPACE)_$(POD_NAME)_$(POD_UID)/app/*.log")
    env = by_name(exporter["env"])
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    volumes = by_name(spec["volumes"])
    assert volumes["tailpage-pod-logs"]["hostPath"]["path"] == "/var/log/pods"
    assert by_name(exporter["volumeMounts"])["tailpage-pod-logs"]["readOnly"] is True
    assert "tailpage-logs" not in volumes
    app = by_name(spec["containers"])["app"]
    assert app["args"][-1] == "-"  # the demo app logs to stdout in this mode
    assert "volumeMounts" not in app


def test_demo_workload_writes_where_its_sidecar_reads(render) -> None:
    spec = pod(render(ALL_ON), f"{RELEASE}-tailpage-demo")["spec"]
    app = by_name(spec["containers"])["app"]
    (exporter,) = spec["initContainers"]  # ALL_ON runs it as a native sidecar
    log_dir = app["args"][-1]
    assert by_name(app["volumeMounts"])["tailpage-logs"]["mountPath"] == log_dir
    assert by_name(exporter["volumeMounts"])["tailpage-logs"]["mountPath"] == log_dir
    assert by_name(spec["volumes"])["tailpage-logs"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/-/ready"  # asked for in ALL_ON
    for c in all_containers(spec):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_demo_app_script_is_valid_python(render) -> None:
    app = by_name(pod(render(ALL_ON), f"{RELEASE}-tailpage-demo")["spec"]["containers"])["app"]
    assert app["command"] == ["python", "-c"]
    compile(app["args"][0], "demo-app", "exec")


@pytest.mark.parametrize("program", ["tailpage-exporter", "tailpage-receiver"])
def test_chart_uses_only_flags_the_programs_have(render, program: str) -> None:
    """Every --flag the chart passes to `<program> run` is in that program's `run --help`."""
    flags: set[str] = set()
    for d in render(ALL_ON):
        if d["kind"] != "Deployment":
            continue
        for c in all_containers(d["spec"]["template"]["spec"]):
            if c.get("command") == [program]:
                assert c["args"][0] == "run"
                flags |= {a for a in c["args"] if a.startswith("--")}
    assert flags
    exe = Path(sys.executable).parent / program  # the console script of this virtualenv
    out = subprocess.run([str(exe), "run", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    missing = {f for f in flags if f not in out.stdout}
    assert not missing, f"{program} run does not take {sorted(missing)}"
