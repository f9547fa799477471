"""Generated CNI cases through the real shim on a node, each judged from outside.

Per case: the shim's exit status and stdout must follow the CNI protocol (a result, nothing, or an error
object with a code and a message), it must not hang, neither it nor ipamd may hit an unexpected exception
(a traceback in any log, or the internal-error answer that stands for one), and the node must be left as it
was: an ADD that succeeded is undone with DEL as a runtime would, and then the checkpoint must hold exactly
the sentinel pods again. `judge_output` is pure.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from vpccni.testbed.chaos.cnigrammar import CniCase, NetnsKind
from vpccni.testbed.chaos.logscan import LogScanner
from vpccni.testbed.chaos.observe import checkpoint_holdings
from vpccni.testbed.cniexec import CniOutcome
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.noderunner import NodeRunner

# Codes the CNI spec defines (1-7, 11, 50, 51), 100+ for plugins; upstream answers 999 for internal errors.
SPEC_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 11, 50, 51})
SHIM_INTERNAL = "internal error in aws-cni"
IPAMD_INTERNAL = "ipamd: "  # the CNI endpoint's answer to an exception no handler expected
LATE_CHANGE_S = 35.0  # ipamd waits for an address at most 30 s (its ADD deadline), then rolls back


@dataclass(frozen=True, kw_only=True)
class Judgement:
    code: int | None = None  # the CNI error code (None: success)
    violation: str = ""  # how the answer broke the protocol
    internal: str = ""  # an answer that stands for an unexpected exception


def judge_output(command: str, returncode: int, stdout: str, stderr: str) -> Judgement:
    """Whether the plugin's answer follows the CNI protocol for `command`."""
    text = stdout.strip()
    try:
        doc: Any = json.loads(text) if text else None
    except ValueError:
        return Judgement(violation=f"stdout is not JSON: {text[:120]!r}")
    internal = "Python traceback on stderr" if "Traceback (most recent call last)" in stderr else ""
    if returncode == 0:
        if command == "ADD" and not (isinstance(doc, dict) and (doc.get("ips") or doc.get("ip4"))):
            return Judgement(violation=f"ADD succeeded without a result: {text[:120]!r}", internal=internal)
        if command == "VERSION" and not (isinstance(doc, dict) and doc.get("supportedVersions")):
            return Judgement(
                violation=f"VERSION without supportedVersions: {text[:120]!r}", internal=internal
            )
        if command in ("DEL", "CHECK", "STATUS", "GC") and doc is not None:
            return Judgement(violation=f"{command} printed {text[:120]!r} on success", internal=internal)
        return Judgement(internal=internal)
    if returncode != 1:
        return Judgement(violation=f"exit status {returncode}", internal=internal)
    if not (isinstance(doc, dict) and isinstance(doc.get("code"), int) and isinstance(doc.get("msg"), str)):
        return Judgement(violation=f"exit 1 without an error object: {text[:120]!r}", internal=internal)
    code, msg = int(doc["code"]), str(doc["msg"])
    if code not in SPEC_CODES and code < 100:
        return Judgement(code=code, violation=f"error code {code} is not one the spec defines")
    if code == 999 and (msg.startswith(SHIM_INTERNAL) or msg.startswith(IPAMD_INTERNAL)):
        internal = msg[:200]
    return Judgement(code=code, internal=internal)


@dataclass(frozen=True, kw_only=True)
class CaseReport:
    command: str
    netns: str
    code: int | None
    ok: bool
    hang: bool
    seconds: float
    violation: str = ""
    internal: str = ""
    tracebacks: tuple[str, ...] = ()
    state_change: str = ""

    @property
    def findings(self) -> list[str]:
        out = [f"hang after {self.seconds:.0f} s"] if self.hang else []
        out += [f"protocol: {self.violation}"] if self.violation else []
        out += [f"internal error: {self.internal}"] if self.internal else []
        out += [f"traceback: {t}" for t in self.tracebacks]
        out += [f"state change: {self.state_change}"] if self.state_change else []
        return out


def canonical_del(runner: NodeRunner, env: Mapping[str, str]) -> CniOutcome:
    """DEL of (CNI_CONTAINERID, CNI_IFNAME) in `env` with the node's own plugin config."""
    clean = {k: v for k, v in env.items() if k != "CNI_COMMAND"}
    clean["CNI_COMMAND"] = "DEL"
    return runner.exec_shim(clean, json.dumps(runner.plugin_config()).encode())


def describe(case: CniCase) -> str:
    """A case in one line, for a report."""
    env = dict(case.env)
    shown = {k: v[:70] for k, v in env.items() if k != "PATH"}
    return f"{case.netns.value} netns, env {shown}, stdin {case.stdin[:160]!r}"


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """What the node holds between cases: the checkpoint's (container id, ifname, ip) and each sentinel
    host veth's interface index (a veth deleted and made again under the same name has another)."""

    holdings: frozenset[tuple[str, str, str]]
    veths: frozenset[tuple[str, int]]
    pod_veths: frozenset[str]  # every pod veth in the node namespace (the sentinels' only, between cases)


class CniFuzzer:
    """Executes cases on one node whose only pods are the sentinels (`baseline()` is what it must hold)."""

    def __init__(
        self,
        *,
        runner: NodeRunner,
        scratch: Path,
        sentinel_netns: Callable[[], str],
        sentinel_veths: Callable[[], Iterable[str]],
        scanner: LogScanner,
        timeout_s: float = 8.0,
    ) -> None:
        self._runner = runner
        self._scratch = scratch
        self._sentinel_netns = sentinel_netns
        self._sentinel_veths = sentinel_veths
        self._links: IPRoute | None = None
        self.suspects: dict[str, str] = {}  # pod veth → the case after which it was there
        self._scanner = scanner
        self._timeout_s = timeout_s
        self._fresh = itertools.count(1)
        self._suffix = secrets.token_hex(3)

    def close(self) -> None:
        if self._links is not None:
            self._links.close()
            self._links = None

    def prepare(self) -> None:
        """The files hostile paths name: a regular file, a directory, a FIFO, a queue directory; and a
        netlink socket in the node namespace to see the sentinels' veths after every case."""
        self._links = ns.open_iproute(self._runner.node.netns)
        self._scratch.mkdir(parents=True, exist_ok=True)
        (self._scratch / "file").write_text("not a namespace\n")
        (self._scratch / "dir").mkdir(exist_ok=True)
        (self._scratch / "queue").mkdir(exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkfifo(self._scratch / "fifo")

    def baseline(self) -> Baseline:
        path = self._runner.checkpoint
        data = path.read_bytes() if path.exists() else b""
        holdings = frozenset((h.container_id, h.ifname, str(h.ip)) for h in checkpoint_holdings(data))
        veths, pod_veths = set(), set()
        if self._links is not None:
            for name in self._sentinel_veths():
                veths |= {(name, index) for index in self._links.link_lookup(ifname=name)}
            for link in self._links.get_links():
                name = str(link.get_attr("IFLA_IFNAME"))
                if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth" and not name.startswith(
                    "eth"
                ):
                    pod_veths.add(name)  # the testbed's ENI links are veths named ethN
        return Baseline(holdings=holdings, veths=frozenset(veths), pod_veths=frozenset(pod_veths))

    def _netns_path(self, kind: NetnsKind) -> tuple[str | None, str | None]:
        """(CNI_NETNS, the fresh namespace to delete afterwards)."""
        if kind is NetnsKind.FRESH:
            name = f"vfz-{self._suffix}-{next(self._fresh)}"
            ns.create_netns(name)
            return str(ns.netns_path(name)), name
        paths = {
            NetnsKind.UNSET: None,
            NetnsKind.EMPTY: "",
            NetnsKind.MISSING: str(self._scratch / "missing-netns"),
            NetnsKind.REGULAR_FILE: str(self._scratch / "file"),
            NetnsKind.DIRECTORY: str(self._scratch / "dir"),
            NetnsKind.DEV_NULL: "/dev/null",
            NetnsKind.FIFO: str(self._scratch / "fifo"),
            NetnsKind.RELATIVE: "netns/relative",
            NetnsKind.NODE: self._runner.node.netns_path,
            NetnsKind.SELF: "/proc/self/ns/net",
        }
        if kind is NetnsKind.SENTINEL:
            return self._sentinel_netns(), None
        return paths[kind], None

    def run(self, case: CniCase, *, baseline: Baseline) -> CaseReport:
        path, fresh = self._netns_path(case.netns)
        env = case.environment(path)
        self._scanner.mark()
        try:
            outcome = self._runner.exec_shim(env, case.stdin, timeout_s=self._timeout_s)
            if outcome.ok and case.command == "ADD":
                self._undo_add(case, env, outcome)
            if outcome.timed_out:
                # ipamd may still carry out (and then roll back) what the shim gave up on: the node is
                # judged once the request's own deadline has passed.
                time.sleep(LATE_CHANGE_S)
            state = self._state_change(baseline, case)
        finally:
            if fresh is not None:
                ns.delete_netns(fresh)
        judged = judge_output(case.command, outcome.returncode, outcome.stdout, outcome.stderr)
        return CaseReport(
            command=case.command or "(none)",
            netns=case.netns.value,
            code=judged.code,
            ok=outcome.ok,
            hang=outcome.timed_out,
            seconds=outcome.elapsed_s,
            violation="" if outcome.timed_out else judged.violation,
            internal=judged.internal,
            tracebacks=tuple(str(t) for t in self._scanner.since_mark()),
            state_change=state,
        )

    def _undo_add(self, case: CniCase, env: Mapping[str, str], added: CniOutcome) -> None:
        """DEL what an ADD set up, as the runtime would (the same config with the result as prevResult);
        if that fails, a DEL with the node's own config."""
        conf = case.netconf()
        if conf is not None:
            conf["prevResult"] = added.document
            undo = self._runner.exec_shim({**env, "CNI_COMMAND": "DEL"}, json.dumps(conf).encode())
            if undo.ok:
                return
        canonical_del(self._runner, env)

    def _state_change(self, baseline: Baseline, case: CniCase) -> str:
        now = self.baseline()
        # A veth a case made goes with its sandbox's namespace, which the kernel destroys asynchronously
        # (seconds on a busy machine): it is only a suspect, judged (and named after its case) once the
        # node is checked as a whole.
        for name in now.pod_veths - baseline.pod_veths:
            self.suspects.setdefault(name, describe(case))
        changes = []
        if now.holdings != baseline.holdings:
            extra, gone = sorted(now.holdings - baseline.holdings), sorted(baseline.holdings - now.holdings)
            changes.append(f"checkpoint gained {extra[:3]} lost {gone[:3]}")
        if now.veths != baseline.veths:
            changes.append(f"sentinel host veths {sorted(baseline.veths)} are now {sorted(now.veths)}")
        return "; ".join(changes)
