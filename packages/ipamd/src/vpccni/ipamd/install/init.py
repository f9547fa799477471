"""The init container (`aws-vpc-cni-init` upstream): host CNI binaries and sysctls, then exit.

    python -m vpccni.ipamd.install.init [--plugins-dir /init] [--app-dir /app]

1. Installs every file of the plugins directory (the reference CNI plugins: loopback, portmap, bandwidth, ...)
   and the standalone `aws-cni` (with the interpreter it brings, `vpccni.cniplugin.install`) into
   HOST_CNI_BIN_PATH, each atomically. A read-only HOST_CNI_BIN_PATH is reported as such.
2. Finds the primary interface by the IMDS `mac` and sets `net/ipv4/conf/<if>/rp_filter=2` (loose: replies
   to pods on secondary ENIs arrive on another interface than the route back).
3. Sets `net/ipv4/tcp_early_demux` to 0 with DISABLE_TCP_EARLY_DEMUX=true, else 1, when the kernel has it.
4. Sets `net/ipv4/ip_forward=1` (not upstream's init, which leaves it to the AMI): ipamd's host setup requires
   it, and /proc/sys is read-only in the unprivileged aws-node container.
5. As upstream: with ENABLE_IPv6, `net/ipv6/conf/all/disable_ipv6=0`; with ENABLE_IPv6 or ENABLE_V6_EGRESS,
   `net/ipv6/conf/<if>/accept_ra=2` (router advertisements still accepted on the primary interface once the
   node forwards: its IPv6 default route comes from them) and then `net/ipv6/conf/all/forwarding=1`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vpccni.awsutils.errors import ImdsError
from vpccni.awsutils.imds import ImdsHttpClient, InstanceMetadata
from vpccni.cniplugin.install import InstallError, install, reporting_read_only
from vpccni.ipamd.install.files import install_dir
from vpccni.ipamd.install.logsetup import configure_stdout_logging
from vpccni.ipamd.install.netdev import SYS_CLASS_NET, InterfaceNotFoundError, interface_by_mac
from vpccni.ipamd.install.sysctl import ProcSysctl, Sysctl
from vpccni.ipamd.plan import InstallPlan, WiringPlan
from vpccni.ipamd.settings import load_settings

_log = logging.getLogger(__name__)

INIT_EXECUTABLE = "aws-vpc-cni-init"
RP_FILTER_LOOSE = "2"
TCP_EARLY_DEMUX = "net/ipv4/tcp_early_demux"
IP_FORWARD = "net/ipv4/ip_forward"


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    host_cni_bin: Path
    plugins_dir: Path = Path("/init")
    app_dir: Path = Path("/app")  # holds the standalone CNI executables (aws-cni) and their .vpccni/
    disable_tcp_early_demux: bool = False
    ipv6: bool = False  # ENABLE_IPv6
    v6_egress: bool = False  # ENABLE_V6_EGRESS
    sys_class_net: Path = SYS_CLASS_NET

    @classmethod
    def from_plan(cls, plan: InstallPlan, **overrides: object) -> InitConfig:
        values: dict[str, object] = {
            "host_cni_bin": plan.bin_dir,
            "disable_tcp_early_demux": plan.disable_tcp_early_demux,
            "ipv6": plan.ipv6,
            "v6_egress": plan.v6_egress,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class InitReport:
    installed: tuple[Path, ...]
    primary_interface: str
    sysctls: tuple[tuple[str, str], ...]


def install_binaries(config: InitConfig) -> list[Path]:
    with reporting_read_only(config.host_cni_bin):
        installed = install_dir(config.plugins_dir, config.host_cni_bin, exclude=(INIT_EXECUTABLE,))
        installed += install(config.app_dir, config.host_cni_bin)
    return installed


def set_sysctls(config: InitConfig, *, sysctl: Sysctl, primary_interface: str) -> list[tuple[str, str]]:
    wanted = [(f"net/ipv4/conf/{primary_interface}/rp_filter", RP_FILTER_LOOSE)]
    if sysctl.exists(TCP_EARLY_DEMUX):
        wanted.append((TCP_EARLY_DEMUX, "0" if config.disable_tcp_early_demux else "1"))
    wanted.append((IP_FORWARD, "1"))
    if config.ipv6:
        wanted.append(("net/ipv6/conf/all/disable_ipv6", "0"))
    if config.ipv6 or config.v6_egress:
        wanted.append((f"net/ipv6/conf/{primary_interface}/accept_ra", "2"))
        wanted.append(("net/ipv6/conf/all/forwarding", "1"))
    for key, value in wanted:
        sysctl.write(key, value)
        _log.info("set %s=%s", key.replace("/", "."), value)
    return wanted


def run_init(config: InitConfig, *, sysctl: Sysctl, metadata: InstanceMetadata) -> InitReport:
    installed = install_binaries(config)
    primary = interface_by_mac(metadata.primary_mac(), sys_class_net=config.sys_class_net)
    done = set_sysctls(config, sysctl=sysctl, primary_interface=primary)
    return InitReport(installed=tuple(installed), primary_interface=primary, sysctls=tuple(done))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=INIT_EXECUTABLE, description="install CNI binaries and set sysctls")
    p.add_argument("--plugins-dir", type=Path, help="directory of CNI plugins to install (default /init)")
    p.add_argument("--app-dir", type=Path, help="holds the standalone aws-cni to install (default /app)")
    p.add_argument("--proc-sys", type=Path, default=Path("/proc/sys"), help=argparse.SUPPRESS)
    p.add_argument("--sys-class-net", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    configure_stdout_logging()
    try:
        plan = WiringPlan.from_settings(load_settings(env))
        config = InitConfig.from_plan(
            plan.install, plugins_dir=args.plugins_dir, app_dir=args.app_dir, sys_class_net=args.sys_class_net
        )
        report = run_init(
            config,
            sysctl=ProcSysctl(args.proc_sys),
            metadata=InstanceMetadata(ImdsHttpClient(plan.aws.imds)),
        )
    except (ValueError, OSError, InstallError, ImdsError, InterfaceNotFoundError) as exc:
        _log.error("init failed: %s", exc)
        return 1
    _log.info(
        "init done: %d binaries in %s, primary interface %s",
        len(report.installed), config.host_cni_bin, report.primary_interface,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
