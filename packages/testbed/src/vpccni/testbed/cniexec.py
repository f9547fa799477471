"""Executing CNI plugins as a container runtime does: the CNI environment, the plugin's stdin from a conflist
(with `prevResult` and the pod's annotations as libcni passes them), the plugin run from a thread inside the
node's namespace, and its outcome (exit status, answer, time)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vpccni.cniplugin.netconf import POD_ANNOTATIONS_KEY
from vpccni.testbed.datapath import namespaces as ns


@dataclass(frozen=True, kw_only=True)
class CniOutcome:
    command: str
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    # Each plugin's own time when a chain ran ((type, seconds) in the order they ran).
    plugins: tuple[tuple[str, float], ...] = ()

    def then(self, other: CniOutcome) -> CniOutcome:
        """This plugin's outcome followed by the next one's in the chain: the latter's answer, both times."""
        return CniOutcome(
            command=self.command,
            returncode=other.returncode,
            stdout=other.stdout,
            stderr=self.stderr + other.stderr,
            elapsed_s=self.elapsed_s + other.elapsed_s,
            plugins=(*self.plugins, *other.plugins),
        )

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def document(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.stdout) if self.stdout.strip() else {}
        except json.JSONDecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}

    @property
    def error(self) -> str:
        doc = self.document
        if self.ok:
            return ""
        return (
            f"CNI error {doc.get('code')}: {doc.get('msg')} {doc.get('details', '')}".strip()
            if doc
            else (self.stderr.strip() or f"exit {self.returncode}")
        )


def cni_env(
    *, command: str, container_id: str, netns_path: str, ifname: str, cni_path: str, pod_namespace: str,
    pod_name: str, pod_uid: str,
) -> dict[str, str]:  # fmt: skip
    """The environment a runtime gives a plugin: the CNI_* variables, with the pod's identity in CNI_ARGS."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": ifname,
        "CNI_PATH": cni_path,
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod_namespace};K8S_POD_NAME={pod_name};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={pod_uid}"
        ),
    }


def plugin_stdin(
    conflist: Mapping[str, Any],
    *,
    plugin_type: str,
    prev_result: Mapping[str, Any] | None,
    annotations: Mapping[str, str],
) -> dict[str, Any]:
    """The conflist's entry of `plugin_type` with `cniVersion` and `name` injected (and `prevResult` for a
    chained ADD, DEL and CHECK): what libcni writes on its stdin. The pod's annotations go in
    `runtimeConfig` when the plugin declares the CRI's capability for them (as libcni passes them)."""
    plugin = dict(next(p for p in conflist["plugins"] if p.get("type") == plugin_type))
    plugin["cniVersion"] = conflist["cniVersion"]
    plugin["name"] = conflist["name"]
    if prev_result:
        plugin["prevResult"] = dict(prev_result)
    if annotations and (plugin.get("capabilities") or {}).get(POD_ANNOTATIONS_KEY):
        plugin["runtimeConfig"] = {POD_ANNOTATIONS_KEY: dict(annotations)}
    return plugin


def exec_plugin(
    netns: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    stdin: bytes,
    *,
    timeout_s: float,
    plugin_type: str,
) -> CniOutcome:
    """Execute a plugin in the node namespace `netns` with exactly `env` and `stdin`. A plugin still running
    after `timeout_s` is killed, as a runtime gives up on it: the outcome then has returncode -9 and
    `timed_out`."""

    # The plugin is executed directly by a thread that has entered the node's namespace, which the child
    # inherits: a runtime on the node execs plugins the same way, with no `nsenter` in between to be
    # counted in the timings.
    def execute() -> tuple[int, bytes, bytes, float]:
        started = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv), input=stdin, env=dict(env), capture_output=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:  # run() killed it
            return -signal.SIGKILL, exc.stdout or b"", exc.stderr or b"", time.monotonic() - started
        return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started

    returncode, stdout, stderr, elapsed = ns.in_netns(netns, execute)
    return CniOutcome(
        command=env.get("CNI_COMMAND", ""),
        returncode=returncode,
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
        elapsed_s=elapsed,
        plugins=((plugin_type, elapsed),),
    )
