"""The demo: testbed nodes running the real `aws-k8s-agent` and `aws-cni`, pods, real traffic, teardown.

Exit status: 0 when every pod got an address, every connectivity check passed and every address went back
after DEL; 1 otherwise; 130 on Ctrl-C. Whatever happens, every namespace, process and temp dir it made is
removed (unless `--keep`, which holds everything up until Ctrl-C).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO, TypeVar

from vpccni.cniplugin import install
from vpccni.ipamd.cards import checkpoint_path
from vpccni.ipamd.cli.introspect import pod_rows
from vpccni.testbed import bareroot
from vpccni.testbed.cluster import Cluster, ClusterConfig
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.demo import multinic, report
from vpccni.testbed.demo.connectivity import ProbeResult, plan_and_run
from vpccni.testbed.demo.options import DemoOptions, parse_args
from vpccni.testbed.demo.placement import IPAddress, PlacedPod, place
from vpccni.testbed.demo.progress import Progress
from vpccni.testbed.demo.runtime import ContainerdRuntime, PodRuntime, ShimRuntime
from vpccni.testbed.demo.sgp import SgpDemo
from vpccni.testbed.ec2.instance_types import limits_for
from vpccni.testbed.modes import dual_stack
from vpccni.testbed.noderunner import NodeRunner, Pod, build_shim

log = logging.getLogger(__name__)

_Item = TypeVar("_Item")
_Value = TypeVar("_Value")


class _Stop(Exception):
    """SIGTERM: unwind and clean up like Ctrl-C."""


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    # SIGINT explicitly too: a shell starting the demo in the background leaves it ignored.
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """During cleanup a second Ctrl-C must not leave half the testbed behind."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass(kw_only=True)
class Demo:
    options: DemoOptions
    out: TextIO
    err: TextIO
    workdir: Path
    cluster: Cluster | None = None
    runners: list[NodeRunner] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    calls_before_agents: int = 0
    runtime: PodRuntime = field(default_factory=ShimRuntime)
    pods: list[tuple[NodeRunner, Pod]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # ---- steps
    def bring_up(self) -> None:
        o = self.options
        self.say(
            f"Bringing up the testbed: EC2 (moto + fidelity layer), IMDS and the VPC datapath; "
            f"{o.nodes} x {o.instance_type}"
        )
        dual = o.ipv6 or o.v6_egress
        self.cluster = Cluster(ClusterConfig(cloud=dual_stack()) if dual else None)
        self.cluster.start()
        if dual:
            cloud = self.cluster.config.cloud
            self.say(
                f"  dual-stack VPC {cloud.vpc_cidr} and {cloud.vpc_ipv6_cidr}"
                f"; {'an IPv6 cluster' if o.ipv6 else 'an IPv4 cluster with ENABLE_V6_EGRESS'}: "
                + ", ".join(f"{k}={v}" for k, v in o.agent_settings.items())
            )
        shim = build_shim(self.workdir / "opt-cni-bin")
        self.say(
            f"Built the standalone aws-cni (it brings its own interpreter): {shim} -> {os.readlink(shim)}"
        )
        root = self._bare_root(shim.parent) if o.no_python_host else None
        nodes = [self.cluster.add_node(instance_type=o.instance_type) for _ in range(o.nodes)]
        # Calls before this point are the testbed launching instances, not the product.
        self.calls_before_agents = len(self.cluster.cloud.call_log)
        for node in nodes:
            workdir = self.workdir / node.name
            command = (
                bareroot.chroot_argv(
                    root, ["/" + bareroot.CNI_BIN + "/aws-cni"], binds=[ns.NETNS_DIR, workdir]
                )
                if root is not None
                else ()
            )
            runner = NodeRunner(
                node=node, workdir=workdir, shim=shim, env=o.agent_settings, shim_command=command
            )
            self.runners.append(runner)
            runner.start(wait=False)
        for runner in self.runners:
            seconds = runner.wait_serving()
            n = runner.node
            self.say(
                f"  {n.name}: {n.instance.instance_id} {n.instance.instance_type} {n.instance.primary_ip} "
                f"in netns {n.netns}; aws-k8s-agent pid {runner.pid} serving after {seconds:.1f}s; "
                f"conflist {runner.conflist}"
            )

    def _bare_root(self, app: Path) -> Path:
        """A root with only a static busybox, aws-cni installed into its /opt/cni/bin as the init container
        installs it: every node's CNI calls execute it chrooted there."""
        root = bareroot.make_root(self.workdir / "no-python-root")
        install.install(app, root / bareroot.CNI_BIN)
        found = bareroot.host_runtime(root)
        self.say(
            f"Installed aws-cni into {root}/{bareroot.CNI_BIN}: that root holds a static busybox and nothing "
            f"else (python3, C library, dynamic loader: {', '.join(map(str, found)) or 'none'}); every CNI "
            "call below executes its aws-cni chrooted there, as a Bottlerocket node would."
        )
        return root

    def create_pods(self) -> dict[str, list[tuple[Pod, IPAddress]]]:
        o = self.options
        self.runtime.prepare(self.runners)
        self.say("\n" + self.runtime.description)
        plan = [(self.runners[i % len(self.runners)], f"demo-{i + 1:03d}") for i in range(o.pods)]
        placed: dict[str, list[tuple[Pod, IPAddress]]] = {r.node.name: [] for r in self.runners}

        def done(item: tuple[NodeRunner, str], value: tuple[Pod, IPAddress | None, str]) -> str:
            runner, name = item
            pod, ip, error = value
            with self._lock:
                self.pods.append((runner, pod))
            if ip is None:
                self.failures.append(f"ADD {runner.node.name}/{name}: {error}")
                return ""
            placed[runner.node.name].append((pod, ip))
            return f"{runner.node.name}/{name} {ip}"

        self._concurrently("ADD", plan, lambda item: self.runtime.run_pod(*item), done)
        return placed

    def _concurrently(
        self,
        label: str,
        items: Sequence[_Item],
        work: Callable[[_Item], _Value],
        done: Callable[[_Item, _Value], str],
    ) -> None:
        """Run `work` over `items` on the worker pool with a progress bar; `done` returns the progress note
        ("" for a failure). An interrupt cancels what has not started yet."""
        progress = Progress(label=label, total=len(items), stream=self.err)
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.options.workers) as pool:
            futures = {pool.submit(work, item): item for item in items}
            try:
                for future in concurrent.futures.as_completed(futures):
                    note = done(futures[future], future.result())
                    progress.advance(failed=not note, note=note)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                progress.close()

    def show_pods(self, placed: dict[str, list[tuple[Pod, IPAddress]]]) -> list[PlacedPod]:
        rows: list[PlacedPod] = []
        for runner in self.runners:
            rows.extend(place(runner, placed[runner.node.name]))
        self.say(report.heading(f"Pods ({len(rows)} of {self.options.pods} have an address)"))
        self.out.write(report.pods_table(rows))
        return rows

    def show_connectivity(self, placed: list[PlacedPod]) -> list[ProbeResult]:
        assert self.cluster is not None
        self.say(report.heading("Connectivity (real packets; the far end reports the source address it saw)"))
        results = plan_and_run(self.cluster, placed, egress=self.options.egress)
        self.out.write(report.connectivity_table(results))
        for r in results:
            if not r.ok:
                self.failures.append(f"connectivity {r.kind}: {r.source} -> {r.target} saw {r.seen_source}")
        if not results:
            self.say("(no pods to test)")
        return results

    def show_multi_nic(self) -> None:
        """A multi-NIC pod on each node, beside the ordinary ones: its interfaces, real traffic from each."""
        assert self.cluster is not None
        self.say(
            report.heading(
                f"Multi-NIC: a pod annotated {multinic.MULTI_NIC_ANNOTATION}: multi-nic-attachment"
            )
        )
        checks = []
        for runner in self.runners:
            pod, ip, error = self.runtime.run_pod(runner, multinic.POD_NAME, annotations=multinic.ANNOTATIONS)
            with self._lock:
                self.pods.append((runner, pod))
            if ip is None:
                self.failures.append(f"ADD multi-NIC {runner.node.name}/{multinic.POD_NAME}: {error}")
                continue
            checks.extend(multinic.check_pod(self.cluster, runner, pod))
        self.say(
            "  One interface per network card (eth0, then upstream's mNicIf1...), each with an address of "
            "that card's ENIs and its own route table; each sends to the VPC host from its own address:"
        )
        self.out.write(multinic.table(checks))
        cards = len(limits_for(self.options.instance_type).enis_per_card)
        self.failures.extend(multinic.failures(checks, cards=cards))

    def show_pools(self, title: str) -> dict[str, tuple[dict[str, object], dict[str, object]]]:
        pools = {}
        for runner in self.runners:
            pools[runner.node.name] = (runner.introspect("/v1/pool"), runner.introspect("/v1/enis"))
        self.say(report.heading(title))
        self.out.write(report.pool_table(pools))
        return pools

    def show_ec2_calls(self) -> None:
        assert self.cluster is not None
        self.say(report.heading("EC2 calls the agents made (testbed call log, by action)"))
        self.out.write(report.ec2_calls_table(self.cluster.cloud.call_log[self.calls_before_agents :]))

    def show_cluster_view(self, *, expected_assigned: int) -> None:
        """What `vpccni cluster --kubeconfig ...` prints: the aws-node pods are reported to the API server as
        kubelet would, and their metrics read through its pod proxy (the cni-metrics-helper's path)."""
        from vpccni.ipamd.cli import cluster as view
        from vpccni.ipamd.cli.tables import render_table
        from vpccni.k8sapi.cluster import KubernetesCluster
        from vpccni.k8sapi.config import load_config

        assert self.cluster is not None and self.cluster.kube is not None
        for runner in self.runners:
            self.cluster.register_aws_node(runner.node)
        kubeconfig = self.cluster.kube.write_kubeconfig(self.workdir / "kubeconfig")
        self.say(report.heading(f"vpccni cluster --kubeconfig {kubeconfig}"))
        self.say("  (PODS counts pods the API server knows; the demo makes its pods without a kubelet)")
        reader = KubernetesCluster(load_config(kubeconfig=kubeconfig))
        try:
            rows = view.cluster_rows(reader)
        finally:
            reader.close()
        total = view.totals(rows)
        self.out.write(render_table(view.HEADERS, [r.cells() for r in [*rows, total]]))
        if total.assigned != expected_assigned:
            self.failures.append(
                f"vpccni cluster shows {total.assigned} assigned addresses, not {expected_assigned}"
            )

    def keep_up(self) -> None:
        self.say(report.heading("--keep: everything stays up until Ctrl-C"))
        cli = Path(sys.executable).parent / "vpccni"
        for runner in self.runners:
            n = runner.node
            pad = " " * len(n.name)
            self.say(f"  {n.name}: ip netns exec {n.netns} curl 127.0.0.1:61679/v1/enis")
            self.say(f"  {pad}  ip netns exec {n.netns} {cli} pods   (also: enis, doctor)")
            self.say(f"  {pad}  ipamd log: {runner.log_file}")
        shown: set[str] = set()
        for runner, pod in self.pods:
            if runner.node.name not in shown and pod.netns:
                shown.add(runner.node.name)
                self.say(
                    f"  pod {pod.name} on {runner.node.name}: ip netns exec {pod.netns} ip addr show eth0"
                )
        self.say("Press Ctrl-C to tear down.")
        while True:
            signal.pause()

    def delete_pods(self) -> None:
        with self._lock:
            work, self.pods = list(self.pods), []

        def done(item: tuple[NodeRunner, Pod], error: str) -> str:
            runner, pod = item
            if error:
                self.failures.append(f"DEL {runner.node.name}/{pod.name}: {error}")
                return ""
            return f"{runner.node.name}/{pod.name}"

        self._concurrently("DEL", work, lambda item: self.runtime.remove_pod(*item), done)

    def verify_returned(self) -> None:
        self.say(report.heading("After DEL: every address is back in the pool"))
        for runner in self.runners:
            enis = runner.introspect("/v1/enis")
            left = pod_rows(enis)
            recorded = 0
            for card in enis:  # one checkpoint file per network card (ipam.json, ipam-nic-1.json...)
                path = Path(checkpoint_path(str(runner.checkpoint), int(card)))
                checkpoint = json.loads(path.read_text()) if path.exists() else {}
                recorded += len(checkpoint.get("allocations") or [])
            verdict = "datastore empty" if not left and recorded == 0 else "ADDRESSES STILL ASSIGNED"
            name = runner.node.name
            self.say(f"  {name}: {len(left)} assigned in ipamd, {recorded} in the checkpoint: {verdict}")
            if left or recorded:
                self.failures.append(f"{runner.node.name}: {len(left)} addresses still assigned after DEL")
            if self.options.egress is not None:
                store = runner.state_dir / "egress-ipam" / "aws-cni"
                held = [p.name for p in store.iterdir() if p.name[0].isdigit()] if store.exists() else []
                self.say(f"  {' ' * len(name)}  {len(held)} egress-cni addresses reserved in {store}")
                if held:
                    self.failures.append(f"{name}: egress addresses still reserved after DEL: {held}")

    def tear_down(self) -> None:
        with contextlib.suppress(Exception):
            self.runtime.close()
        for runner in self.runners:
            with contextlib.suppress(Exception):
                runner.close()
        if self.cluster is not None:
            self.cluster.stop()

    # ---- the whole run
    def run(self) -> int:
        started = time.monotonic()
        self.bring_up()
        placed = self.show_pods(self.create_pods())
        self.show_connectivity(placed)
        if self.options.multi_nic:
            self.show_multi_nic()
        self.show_pools("Warm pool per node (ipamd introspection /v1/pool and /v1/enis)")
        self.show_ec2_calls()
        if self.options.cluster_view:
            self.show_cluster_view(expected_assigned=len(placed))
        if self.options.keep:
            self.keep_up()
        self.say(report.heading(f"Deleting the pods ({self.runtime.delete_description})"))
        self.delete_pods()
        self.verify_returned()
        self.show_pools("Warm pool per node after DEL (released addresses cool down before reuse)")
        self.say(report.result(self.failures, time.monotonic() - started))
        return 1 if self.failures else 0


def run_demo(options: DemoOptions, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="vpccni-demo-"))
    runtime: PodRuntime = ContainerdRuntime() if options.runtime == "containerd" else ShimRuntime()
    demo: Demo | SgpDemo = Demo(options=options, out=out, err=err, workdir=workdir, runtime=runtime)
    if options.security_groups_for_pods:
        demo = SgpDemo(
            out=out,
            workdir=workdir,
            instance_type=options.instance_type,
            settings=options.settings,
            ipv6=options.ipv6,
        )
    try:
        with _signals_unwind():
            return demo.run()
    except (KeyboardInterrupt, _Stop):
        err.write("\ninterrupted: tearing everything down\n")
        return 130
    except Exception as exc:  # a failed step: say what and why, then clean up
        log.debug("demo failed", exc_info=True)
        err.write(f"\ndemo failed: {exc}\n")
        return 1
    finally:
        with _signals_ignored():
            try:
                demo.tear_down()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        out.write("Torn down: namespaces, agents and temp files removed.\n")
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--network-policy" in args:  # its own demo: NetworkPolicy with real packets
        from vpccni.testbed.netpol.demo import main as network_policy_demo

        return network_policy_demo([a for a in args if a != "--network-policy"])
    options = parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_demo(options)
