"""Run the real product on a testbed node: `aws-k8s-agent` inside the node namespace, the bundled `aws-cni`
shim and `10-aws.conflist`, and pods created by running the shim exactly as a container runtime does.

    shim = build_shim(tmp / "bin")
    runner = NodeRunner(node=node, workdir=tmp / node.name, shim=shim).start()
    pod = runner.create_pod(namespace="default", name="web-1")
    outcome = runner.add(pod)            # CNI_COMMAND=ADD through the shim; outcome.result is the CNI result
    runner.delete(pod)                   # DEL with prevResult, as libcni sends it

ADD, DEL and CHECK run the conflist's chain as libcni does: `aws-cni`, then `egress-cni` when the conflist has
it (IPv4 egress in an IPv6 cluster, ENABLE_V6_EGRESS), each getting the previous result as `prevResult`; DEL
in reverse order. Other plugins of the conflist (portmap, bandwidth, tuning) are not installed here.
    runner.stop()                        # SIGTERM by PID; pod namespaces this runner made are deleted

Everything the runner makes lives under its `workdir` (run dir, checkpoint, logs, conflist) or is a namespace
named `vpod-<node namespace suffix>-<n>` it deletes in `stop()`. How a plugin is executed is in `cniexec`;
ending and sampling the agent process in `childproc`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpccni.cniplugin import wire
from vpccni.cniplugin.errors import CNIError
from vpccni.cniplugin.version import VERSION
from vpccni.ipamd.cli.introspect import HttpIntrospection, IntrospectionError
from vpccni.ipamd.install.conflist import EGRESS_TYPE, conflist_bytes, conflist_path, with_node_ip
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import load_settings
from vpccni.testbed.childproc import ProcessSample, process_sample_of, rss_mib_of, stop_child
from vpccni.testbed.cluster import Node
from vpccni.testbed.cniexec import CniOutcome, cni_env, exec_plugin, plugin_stdin
from vpccni.testbed.datapath import namespaces as ns

log = logging.getLogger(__name__)

INTROSPECTION = "127.0.0.1:61679"
METRICS_PORT = 61678
NETWORK_NAME = "aws-cni"
PLUGIN_TYPE = "aws-cni"
CHAINED_TYPES = (EGRESS_TYPE,)  # plugins after aws-cni that the runner executes (built with the shim)


class NodeRunnerError(RuntimeError):
    """The agent did not come up (the message carries its log tail) or a runner step failed."""


# The interpreter the image packs with aws-cni (Debian 12's), which this machine has too.
SYSTEM_PYTHON = "/usr/bin/python3"


def build_shim(out_dir: Path) -> Path:
    """The standalone `aws-cni` in `out_dir` as the image's init container installs it in /opt/cni/bin (a
    symlink into `.vpccni/`, with the system interpreter packed as the image packs its own)."""
    return _build(out_dir, ["vpccni.cniplugin.standalone", str(out_dir), "--python", SYSTEM_PYTHON])


def build_script_shim(out_dir: Path) -> Path:
    """The single-file `aws-cni` run by the host's python3 (`python -m vpccni.cniplugin.bundle OUT`)."""
    return _build(out_dir, ["vpccni.cniplugin.bundle", str(out_dir / "aws-cni")])


def _build(out_dir: Path, module_args: list[str]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "aws-cni"
    proc = subprocess.run([sys.executable, "-m", *module_args], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not target.exists():
        raise NodeRunnerError(f"building aws-cni failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return target


def agent_argv() -> list[str]:
    """The installed `aws-k8s-agent` console script next to this interpreter, else the module."""
    script = Path(sys.executable).parent / "aws-k8s-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vpccni.ipamd.main"]


@dataclass(frozen=True, kw_only=True)
class Pod:
    namespace: str
    name: str
    container_id: str
    uid: str
    netns: str  # the pod sandbox's network namespace name
    annotations: tuple[tuple[str, str], ...] = ()  # the pod's, as the CRI hands them to the plugin

    @property
    def netns_path(self) -> str:
        return str(ns.netns_path(self.netns))


@dataclass(kw_only=True)
class _PodState:
    pod: Pod
    result: dict[str, Any] | None = None


class NodeRunner:
    """One node's `aws-k8s-agent` (a child in its own session, ended by PID), shim, conflist and pods."""

    def __init__(
        self,
        *,
        node: Node,
        workdir: Path,
        shim: Path,
        env: Mapping[str, str] | None = None,
        state_dir: Path | None = None,
        shim_command: Sequence[str] = (),
    ) -> None:
        self.node = node
        self.workdir = workdir
        # The socket and checkpoint live in /var/run/aws-node on a node, a tmpfs: a caller measuring the
        # per-pod path puts them on one too (default: the workdir).
        self.state_dir = state_dir if state_dir is not None else workdir
        self.shim = shim
        # How a runtime executes the shim, when not by its path (e.g. inside another root: bareroot).
        self.shim_command = tuple(shim_command) or (str(shim),)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._pods: dict[str, _PodState] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self._suffix = node.netns.rsplit("-", 2)[-2] if node.netns.count("-") >= 2 else secrets.token_hex(3)

    # ---- files
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def checkpoint(self) -> Path:
        return self.state_dir / "ipam.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / "ipamd.log"

    @property
    def plugin_log(self) -> Path:
        return self.workdir / "plugin.log"

    @property
    def confdir(self) -> Path:
        return self.workdir / "net.d"

    @property
    def conflist(self) -> Path:
        return conflist_path(self.confdir)

    @property
    def cni_socket(self) -> Path:
        return self.run_dir / "cni.sock"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            **self.node.env(),
            "VPCCNI_RUN_DIR": str(self.run_dir),
            "AWS_VPC_K8S_CNI_BACKING_STORE": str(self.checkpoint),
            "AWS_VPC_K8S_CNI_LOG_FILE": str(self.log_file),
            "AWS_VPC_K8S_PLUGIN_LOG_FILE": str(self.plugin_log),
            "HOST_CNI_CONFDIR_PATH": str(self.confdir),
            "HOST_CNI_BIN_PATH": str(self.shim.parent),
            # egress-cni's host-local store (upstream's /run/cni/v*pd/...), kept with the node's files
            "VPCCNI_EGRESS_IPAM_DIR": str(self.state_dir / "egress-ipam"),
            **self.extra_env,
        }

    # ---- the agent
    def start(self, *, wait: bool = True, timeout_s: float = 90.0) -> NodeRunner:
        if self.proc is not None and self.proc.poll() is None:
            raise NodeRunnerError(f"the agent on {self.node.name} already runs (pid {self.proc.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "stdout.log", "ab") as out:
            # Its own session: a terminal's Ctrl-C reaches only the demo, which then stops the agent itself.
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.node.netns, *agent_argv()],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_serving(timeout_s=timeout_s)
        return self

    def wait_serving(self, *, timeout_s: float = 90.0) -> float:
        """Wait until the CNI socket exists (ipamd opens it only after node init) and introspection answers;
        then install the conflist, as the aws-node entrypoint does once ipamd is healthy. Returns seconds."""
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                raise NodeRunnerError(
                    f"aws-k8s-agent on {self.node.name} exited with {code}:\n{self.log_tail()}"
                )
            # The socket file alone says nothing after a SIGKILL (it stays behind): ask it for STATUS.
            if self.cni_socket.exists() and self.cni_answers():
                with contextlib.suppress(IntrospectionError):
                    self.introspect("/v1/enis")
                    break
            if time.monotonic() > deadline:
                raise NodeRunnerError(
                    f"aws-k8s-agent on {self.node.name} did not serve within {timeout_s:.0f} s "
                    f"(see {self.log_file}):\n{self.log_tail()}"
                )
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        self.install_conflist()
        return elapsed

    def cni_answers(self) -> bool:
        """Whether the CNI endpoint answers a STATUS (ready or not), as the shim would ask it."""
        status = wire.Request(
            version=VERSION,
            command="STATUS",
            netconf={"cniVersion": "1.1.0", "name": NETWORK_NAME, "type": "aws-cni"},
            cni_version="1.1.0",
            timeout_s=5.0,
        )
        try:
            wire.call(str(self.cni_socket), status, None)
        except CNIError:
            return True  # an answer: not ready is still serving
        except wire.WireError:
            return False
        return True

    def install_conflist(self) -> Path:
        """As the entrypoint writes it, with egress-cni's nodeIP from the instance (IMDS's answer)."""
        plan = WiringPlan.from_settings(load_settings(self.env()))
        instance = self.node.instance
        options = with_node_ip(
            plan.install.conflist,
            ipv4=str(instance.primary_ip),
            ipv6=str(instance.primary_ipv6) if instance.primary_ipv6 else "",
        )
        self.confdir.mkdir(parents=True, exist_ok=True)
        tmp = self.conflist.with_suffix(".tmp")
        tmp.write_bytes(conflist_bytes(options))
        tmp.replace(self.conflist)
        return self.conflist

    def stop(self, sig: int = signal.SIGTERM, *, timeout_s: float = 30.0) -> int | None:
        """End the agent by PID (SIGKILL after `timeout_s`); returns its exit status."""
        return stop_child(self.proc, sig, timeout_s=timeout_s)

    def close(self) -> None:
        """Stop the agent and delete every pod namespace this runner created. Idempotent."""
        try:
            self.stop()
        finally:
            with self._lock:
                names = [state.pod.netns for state in self._pods.values()]
                self._pods.clear()
            ns.delete_all(names)

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.workdir / "stdout.log", self.log_file):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def rss_mib(self) -> float | None:
        """The agent's resident memory (VmRSS), or None when it is not running."""
        return rss_mib_of(self.proc)

    def process_sample(self) -> ProcessSample | None:
        """The agent's resident memory, open descriptors and threads, or None when it is not running."""
        return process_sample_of(self.proc)

    # ---- what it serves, read from inside the node namespace
    def introspect(self, path: str, *, address: str = INTROSPECTION) -> Any:
        return ns.in_netns(self.node.netns, lambda: HttpIntrospection(address, timeout_s=5).get_json(path))

    def metrics(self) -> str:
        return ns.in_netns(
            self.node.netns,
            lambda: HttpIntrospection(f"127.0.0.1:{METRICS_PORT}", timeout_s=5).get_text("/metrics"),
        )

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled metric, None when the agent does not export it."""
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    # ---- pods, as a container runtime makes them
    def create_pod(
        self, *, namespace: str, name: str, annotations: Mapping[str, str] | None = None, uid: str = ""
    ) -> Pod:
        """A pod sandbox: its own network namespace (only `lo`), a container id and a UID (the Pod object's,
        when there is one)."""
        with self._lock:
            self._counter += 1
            netns = f"vpod-{self._suffix}-{self.node.name}-{self._counter}"
        pod = Pod(
            namespace=namespace,
            name=name,
            container_id=secrets.token_hex(32),
            uid=uid
            or f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}",
            netns=netns,
            annotations=tuple(sorted((annotations or {}).items())),
        )
        ns.create_netns(netns)
        with self._lock:
            self._pods[pod.container_id] = _PodState(pod=pod)
        return pod

    def remove_pod(self, pod: Pod) -> None:
        """Delete the sandbox's namespace (after DEL, as the runtime does)."""
        with self._lock:
            self._pods.pop(pod.container_id, None)
        ns.delete_netns(pod.netns)

    def pods(self) -> list[Pod]:
        with self._lock:
            return [s.pod for s in self._pods.values()]

    def result_of(self, pod: Pod) -> dict[str, Any] | None:
        with self._lock:
            state = self._pods.get(pod.container_id)
            return state.result if state else None

    def chained(self) -> list[str]:
        """The types after aws-cni in the conflist that this runner executes, in order."""
        plugins = json.loads(self.conflist.read_text())["plugins"]
        return [str(p["type"]) for p in plugins[1:] if p.get("type") in CHAINED_TYPES]

    def add(
        self, pod: Pod, *, ifname: str = "eth0", shim_command: Sequence[str] = (), timeout_s: float = 60.0
    ) -> CniOutcome:
        outcome = self.cni("ADD", pod, ifname=ifname, shim_command=shim_command, timeout_s=timeout_s)
        for kind in self.chained():
            if not outcome.ok:
                break
            outcome = outcome.then(
                self.cni("ADD", pod, ifname=ifname, prev_result=outcome.document, timeout_s=timeout_s,
                         shim_command=_command_for(kind, shim_command), plugin_type=kind)
            )  # fmt: skip
        if outcome.ok:
            with self._lock:
                state = self._pods.get(pod.container_id)
                if state is not None:
                    state.result = outcome.document
        return outcome

    def delete(
        self, pod: Pod, *, ifname: str = "eth0", shim_command: Sequence[str] = (), timeout_s: float = 60.0
    ) -> CniOutcome:
        """DEL through the chain in reverse, as libcni does (stopping at the first failure)."""
        prev_result = self.result_of(pod)
        outcome: CniOutcome | None = None
        for kind in [*reversed(self.chained()), PLUGIN_TYPE]:
            step = self.cni("DEL", pod, ifname=ifname, prev_result=prev_result, timeout_s=timeout_s,
                            shim_command=_command_for(kind, shim_command), plugin_type=kind)  # fmt: skip
            outcome = step if outcome is None else outcome.then(step)
            if not step.ok:
                break
        assert outcome is not None
        return outcome

    def check(self, pod: Pod, *, ifname: str = "eth0") -> CniOutcome:
        outcome = self.cni("CHECK", pod, ifname=ifname, prev_result=self.result_of(pod))
        for kind in self.chained():
            if not outcome.ok:
                break
            outcome = outcome.then(
                self.cni("CHECK", pod, ifname=ifname, prev_result=self.result_of(pod), plugin_type=kind)
            )
        return outcome

    def plugin_config(
        self,
        prev_result: Mapping[str, Any] | None = None,
        *,
        pod: Pod | None = None,
        plugin_type: str = PLUGIN_TYPE,
    ) -> dict[str, Any]:
        """What libcni writes on the stdin of `plugin_type` (aws-cni by default) for `pod`: `plugin_stdin`
        of this runner's conflist."""
        return plugin_stdin(
            json.loads(self.conflist.read_text()),
            plugin_type=plugin_type,
            prev_result=prev_result,
            annotations=dict(pod.annotations) if pod is not None else {},
        )

    def cni(
        self,
        command: str,
        pod: Pod,
        *,
        ifname: str = "eth0",
        prev_result: Mapping[str, Any] | None = None,
        timeout_s: float = 60.0,
        shim_command: Sequence[str] = (),
        plugin_type: str = PLUGIN_TYPE,
    ) -> CniOutcome:
        """Execute the installed shim (or `shim_command`, for this call; `plugin_type`'s executable for a
        chained plugin) in the node's namespace with the CNI environment and stdin."""
        env = cni_env(
            command=command,
            container_id=pod.container_id,
            netns_path=pod.netns_path,
            ifname=ifname,
            cni_path=str(self.shim.parent),
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            pod_uid=pod.uid,
        )
        stdin = json.dumps(self.plugin_config(prev_result, pod=pod, plugin_type=plugin_type)).encode()
        argv = list(shim_command or _command_for(plugin_type, self.shim_command))
        return self.exec_shim(env, stdin, timeout_s=timeout_s, shim_command=argv, plugin_type=plugin_type)

    def exec_shim(
        self,
        env: Mapping[str, str],
        stdin: bytes,
        *,
        timeout_s: float = 60.0,
        shim_command: Sequence[str] = (),
        plugin_type: str = PLUGIN_TYPE,
    ) -> CniOutcome:
        """Execute the shim in the node's namespace with exactly `env` and `stdin` (any CNI invocation, a
        hostile one too). A shim still running after `timeout_s` is killed, as a runtime gives up on a
        plugin: the outcome then has returncode -9 and `timed_out`."""
        argv = list(shim_command or self.shim_command)
        return exec_plugin(self.node.netns, argv, env, stdin, timeout_s=timeout_s, plugin_type=plugin_type)


def _command_for(plugin_type: str, command: Sequence[str]) -> tuple[str, ...]:
    """The command line of `plugin_type` given aws-cni's: the executable beside it (the same build)."""
    argv = list(command)
    if not argv or plugin_type == PLUGIN_TYPE:
        return tuple(argv)
    head, sep, name = argv[-1].rpartition("/")
    if name != PLUGIN_TYPE:
        raise NodeRunnerError(f"cannot tell where {plugin_type} is from the aws-cni command {argv}")
    argv[-1] = f"{head}{sep}{plugin_type}"
    return tuple(argv)
