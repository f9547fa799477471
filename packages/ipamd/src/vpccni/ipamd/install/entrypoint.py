"""The main container's entrypoint (`/app/aws-vpc-cni` upstream).

    python -m vpccni.ipamd.install.entrypoint [--app-dir /app] [--agent "/app/aws-k8s-agent"]

1. Validates the environment (`load_settings`: every check of upstream's entrypoint, listed in
   docs/design/upstream-contract.md §8, and ours); on failure exit 1.
2. Installs the standalone `aws-cni` into HOST_CNI_BIN_PATH atomically (`vpccni.cniplugin.install`).
3. Starts aws-k8s-agent as a child (its stdout/stderr are the container's).
4. Waits until its gRPC health (`grpc.health.v1.aws-node` on <VPCCNI_RUN_DIR>/ipamd.sock) is SERVING,
   without a deadline as upstream: the liveness probe restarts a daemon that never gets there.
5. Only then writes `10-aws.conflist` into HOST_CNI_CONFDIR_PATH: its presence turns the node's network ready,
   so pods are never scheduled onto a node whose ipamd cannot serve them. With egress on, its egress-cni
   entry gets the node's address from IMDS (`local-ipv4`, or `ipv6` for IPv6 egress), as upstream's does.
6. Waits for the child and exits with its status. SIGTERM and SIGINT are forwarded to the child.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from vpccni.cniplugin.install import InstallError, install
from vpccni.ipamd.install.conflist import ConflistOptions, conflist_bytes, conflist_path, with_node_ip
from vpccni.ipamd.install.files import write_atomic
from vpccni.ipamd.install.health import IPAMD_HEALTH_SERVICE, HealthResult, check_health
from vpccni.ipamd.install.logsetup import configure_stdout_logging
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import SettingsError, load_settings

_log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HealthCheck = Callable[[], HealthResult]


@dataclass(frozen=True, kw_only=True)
class EntrypointConfig:
    app_dir: Path = Path("/app")
    agent_command: tuple[str, ...] = ()  # default: <app_dir>/aws-k8s-agent
    poll_interval_s: float = 1.0

    @property
    def command(self) -> tuple[str, ...]:
        return self.agent_command or (str(self.app_dir / "aws-k8s-agent"),)


def exit_status(returncode: int) -> int:
    """A child killed by signal N exits the container with 128+N, as a shell would report it."""
    return 128 - returncode if returncode < 0 else returncode


def imds_node_ips(plan: WiringPlan) -> Callable[[], tuple[str, str]]:
    """(local-ipv4, ipv6) from IMDS; "" for what it does not have."""

    def read() -> tuple[str, str]:
        from vpccni.awsutils.imds import ImdsConfig, ImdsHttpClient, InstanceMetadata

        metadata = InstanceMetadata(ImdsHttpClient(ImdsConfig(endpoint=plan.aws.imds.endpoint)))
        ipv6 = metadata.ipv6()
        return str(metadata.local_ipv4()), str(ipv6) if ipv6 is not None else ""

    return read


def ipamd_health_check(plan: WiringPlan) -> HealthCheck:
    addr = f"unix://{plan.serve.ipamd_socket}"

    def check() -> HealthResult:
        # grpc-health-probe's default 1 s connect timeout, as upstream's waitForIPAM calls it.
        return check_health(addr, service=IPAMD_HEALTH_SERVICE, connect_timeout_s=1.0, rpc_timeout_s=5.0)

    return check


class Entrypoint:
    """Runs steps 2-6 for validated settings; `run()` returns the container's exit status."""

    def __init__(
        self,
        *,
        config: EntrypointConfig,
        plan: WiringPlan,
        environ: Mapping[str, str],
        health_check: HealthCheck,
        node_ips: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        self._node_ips = node_ips or imds_node_ips(plan)
        self._config = config
        self._plan = plan
        self._environ = dict(environ)
        self._health_check = health_check
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            _log.info("forwarding signal %d to aws-k8s-agent (pid %d)", signum, child.pid)
            child.send_signal(signum)

    def _conflist_options(self) -> ConflistOptions:
        options = self._plan.install.conflist
        if options.egress is None or not options.egress.enabled:
            return options
        ipv4, ipv6 = self._node_ips()
        if options.egress.family == 6 and not ipv6:
            _log.warning(
                "ENABLE_V6_EGRESS=true but IMDS has no IPv6 address for the node: egress-cni left out "
                "(IPv6 egress needs the primary ENI to have a global IPv6 address)"
            )
        return with_node_ip(options, ipv4=ipv4, ipv6=ipv6)

    def _wait_healthy(self, child: subprocess.Popen[bytes]) -> bool:
        """True once ipamd is SERVING; False if it exited or we were told to stop first."""
        last = ""
        while child.poll() is None and not self._stopping.is_set():
            result = self._health_check()
            if result.healthy:
                return True
            if result.detail != last:  # one line per change, not one per second
                _log.info("waiting for ipamd to be healthy: %s", result.detail)
                last = result.detail
            self._stopping.wait(self._config.poll_interval_s)
        return False

    def run(self) -> int:
        install(self._config.app_dir, self._plan.install.bin_dir)
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED_SIGNALS}
        try:
            _log.info("starting %s", shlex.join(self._config.command))
            child = subprocess.Popen(list(self._config.command), env=self._environ)
            self._child = child
            if self._stopping.is_set():  # a signal arrived between the handler and Popen
                child.send_signal(signal.SIGTERM)
            if self._wait_healthy(child):
                path = conflist_path(self._plan.install.conf_dir)
                write_atomic(path, conflist_bytes(self._conflist_options()))
                _log.info("ipamd is healthy; wrote %s", path)
            elif child.poll() is not None:
                _log.error(
                    "aws-k8s-agent exited with status %d before it was healthy; see its log (%s)",
                    exit_status(child.returncode), self._plan.logging.file,
                )  # fmt: skip
            status = exit_status(child.wait())
            _log.info("aws-k8s-agent exited with status %d", status)
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aws-vpc-cni", description="run aws-k8s-agent and install the CNI")
    p.add_argument("--app-dir", type=Path, default=Path("/app"), help="holds aws-cni (default /app)")
    p.add_argument("--agent", default="", help="the ipamd command line (default <app-dir>/aws-k8s-agent)")
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between health checks")
    return p


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    configure_stdout_logging()
    try:
        plan = WiringPlan.from_settings(load_settings(env))
    except SettingsError as exc:
        _log.error("%s", exc)
        return 1
    config = EntrypointConfig(
        app_dir=args.app_dir, agent_command=tuple(shlex.split(args.agent)), poll_interval_s=args.poll_interval
    )
    entry = Entrypoint(config=config, plan=plan, environ=env, health_check=ipamd_health_check(plan))
    try:
        return entry.run()
    except (OSError, InstallError) as exc:
        _log.error("install failed: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
