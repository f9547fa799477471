"""`vpccni-testbed up`: start the testbed's EC2 and IMDS, launch a node, print its endpoints as one JSON
object on stdout, and run until SIGTERM/SIGINT, then tear everything down. Progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from vpccni.testbed.cloud import Cloud, CloudConfig

log = logging.getLogger(__name__)


def load_config(path: Path | None) -> tuple[CloudConfig, dict[str, Any]]:
    """A JSON file: CloudConfig fields, plus `instance_type` and `imds_port` for the node."""
    if path is None:
        return CloudConfig(), {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"cannot read testbed config {path}: {exc}") from exc
    node = {k: raw.pop(k) for k in ("instance_type", "imds_port") if k in raw}
    try:
        return CloudConfig.from_mapping(raw), node
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"invalid testbed config {path}: {exc}") from exc


def up(args: argparse.Namespace) -> int:
    config, node = load_config(args.config)
    instance_type = args.instance_type or node.get("instance_type", "m5.large")
    # Block the stop signals before any thread starts (threads inherit the mask) and wait for them
    # synchronously: setting an Event from a Python signal handler can deadlock on the Event's own lock.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    cloud = Cloud(config)
    try:
        cloud.start()
        inst = cloud.launch_instance(instance_type=instance_type)
        imds = cloud.start_imds(inst.instance_id, host=config.host, port=int(node.get("imds_port", 0)))
        info = {
            "ec2_endpoint": cloud.ec2_endpoint,
            "imds_endpoint": imds.endpoint,
            "control_endpoint": cloud.control_endpoint,
            "region": cloud.region,
            "availability_zone": inst.availability_zone,
            "vpc_id": cloud.vpc_id,
            "vpc_cidr": str(config.vpc_cidr),
            "subnet_ids": cloud.subnet_ids,
            "security_group_id": cloud.security_group_id,
            "instance_id": inst.instance_id,
            "instance_type": inst.instance_type,
            "primary_eni_id": inst.primary_eni_id,
            "primary_mac": inst.primary_mac,
            "primary_ip": str(inst.primary_ip),
            "env": cloud.client_env(),
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        log.info("testbed up: %s on %s; SIGTERM or Ctrl-C to stop", inst.instance_id, cloud.ec2_endpoint)
        received = signal.sigwait(stop_signals)
        log.info("stopping the testbed (%s)", signal.Signals(received).name)
    finally:
        cloud.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpccni-testbed", description="A hermetic AWS node for vpccni.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser(
        "up", help="start EC2 + IMDS with one node; print endpoints as JSON; run until signalled"
    )
    p_up.add_argument(
        "--instance-type", default=None, help="EC2 instance type of the node (default m5.large)"
    )
    p_up.add_argument("--config", type=Path, default=None, help="JSON file of CloudConfig fields")
    p_up.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "up":
        return up(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
