"""Run a rendered container on this machine, as far as a test can without a kubelet: its command,
args and env as rendered, its ConfigMap and Secret volumes written out, every mount path mapped
to a directory under tmp, and its 0.0.0.0 listen addresses moved to free loopback ports.

What this proves is that the chart's command lines, config files and Secret keys work with the
real programs; what it cannot prove (image contents, the kubelet's mounts) is the image tests'
and kubernetes-validate's part.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
# What the downward API would give the pod.
FIELD_REFS = {"metadata.name": "demo-7c9f-abcde", "metadata.namespace": "monitoring",
              "metadata.uid": "0f0e0d0c-0b0a-0908-0706-050403020100"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            last = check()
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class Pod:
    """One container of a rendered pod, mapped onto tmp."""

    container: dict[str, Any]
    paths: dict[str, Path]  # in-pod mount path -> local path (longest first)
    ports: dict[int, int]  # containerPort -> local port
    env: dict[str, str]
    log: Path

    def local(self, text: str) -> str:
        """In-pod paths and listen addresses -> local ones, in one pass (a local path such as
        /tmp/pytest-.../volumes/x must not be mapped again by an in-pod /tmp)."""
        if self.paths:
            alternatives = "|".join(re.escape(p) for p in self.paths)  # longest first
            pattern = rf"(?<![\w.-])({alternatives})(?=/|$|[\s\"'])"
            text = re.sub(pattern, lambda m: str(self.paths[m.group(1)]), text, flags=re.M)
        for inside_port, outside_port in self.ports.items():
            text = text.replace(f"0.0.0.0:{inside_port}", f"127.0.0.1:{outside_port}")
        return text

    def argv(self) -> list[str]:
        cmd = list(self.container["command"]) + list(self.container.get("args", []))
        # $(VAR) as the kubelet expands it, from the container's env.
        cmd = [re.sub(r"\$\((\w+)\)", lambda m: self.env.get(m.group(1), m.group(0)), a)
               for a in cmd]
        exe = BIN / cmd[0] if (BIN / cmd[0]).exists() else Path(sys.executable)
        return [str(exe), *(self.local(a) for a in cmd[1:])]

    def url(self, port_name: str, path: str) -> str:
        (port,) = [p["containerPort"] for p in self.container["ports"] if p["name"] == port_name]
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def probe_urls(self) -> dict[str, str]:
        return {name: self.url(self.container[name]["httpGet"]["port"],
                               self.container[name]["httpGet"]["path"])
                for name in ("startupProbe", "livenessProbe", "readinessProbe")
                if name in self.container}

    @contextlib.contextmanager
    def running(self, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
        with self.log.open("wb") as out:
            proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                    env={**os.environ, **self.env}, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def prepare(docs: list[dict[str, Any]], deployment: str, container: str, tmp: Path,
            volume_dirs: dict[str, Path] | None = None) -> Pod:
    """Map `container` of Deployment `deployment` onto tmp. Containers of one pod share
    `volume_dirs` (volume name -> directory), as they share volumes in the pod."""
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment]
    spec = dep["spec"]["template"]["spec"]
    (c,) = [c for c in spec.get("initContainers", []) + spec["containers"]
            if c["name"] == container]
    volumes = {v["name"]: v for v in spec["volumes"]}
    dirs = volume_dirs if volume_dirs is not None else {}
    paths: dict[str, Path] = {}
    new: list[str] = []
    for m in c.get("volumeMounts", []):
        vol = volumes[m["name"]]
        if m["name"] not in dirs:
            new.append(m["name"])
            dirs[m["name"]] = tmp / "volumes" / m["name"]
            dirs[m["name"]].mkdir(parents=True)
            _fill(vol, dirs[m["name"]], by_kind)
        local = dirs[m["name"]] / m["subPath"] if "subPath" in m else dirs[m["name"]]
        paths[m["mountPath"].rstrip("/")] = local
    paths = dict(sorted(paths.items(), key=lambda kv: -len(kv[0])))
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = FIELD_REFS[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = _secret_data(by_kind[("Secret", ref["name"])])[ref["key"]]
    ports = {p["containerPort"]: free_port() for p in c.get("ports", [])}
    pod = Pod(c, paths, ports, env, tmp / f"{container}.log")
    pod.env = {k: pod.local(v) for k, v in env.items()}
    # Config files name in-pod paths too (secret files, the store): map them like the args.
    for name in new:
        if "configMap" in volumes[name] or "secret" in volumes[name]:
            for f in dirs[name].iterdir():
                f.write_text(pod.local(f.read_text()))
    return pod


def _secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def _fill(vol: dict[str, Any], into: Path, by_kind: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Write a ConfigMap or Secret volume's files, as the kubelet projects them."""
    if "configMap" in vol:
        files = by_kind[("ConfigMap", vol["configMap"]["name"])]["data"]
    elif "secret" in vol:
        files = _secret_data(by_kind[("Secret", vol["secret"]["secretName"])])
        items = vol["secret"].get("items")
        if items:
            files = {i["path"]: files[i["key"]] for i in items}
    else:
        return  # emptyDir, PVC, hostPath: an empty directory
    for name, text in files.items():
        (into / name).write_text(text)
