"""`vpccni-testbed up`: bring up the testbed (EC2, IMDS, the Kubernetes API server and, unless
`--no-datapath`, the VPC datapath with N node namespaces), print it as one JSON object on stdout, run until
SIGTERM/SIGINT/SIGHUP, then tear everything down. Progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from vpccni.testbed.cli_up import StartInterrupted, TestbedUp, UpOptions
from vpccni.testbed.cloud import CloudConfig

log = logging.getLogger(__name__)

# SIGHUP too: a closed terminal must not leave namespaces behind.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


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


def up_options(args: argparse.Namespace, node: dict[str, Any]) -> UpOptions:
    """Command-line flags win over the config file's node keys."""
    return UpOptions(
        instance_type=args.instance_type or node.get("instance_type", "m5.large"),
        nodes=args.nodes,
        datapath=not args.no_datapath,
        imds_port=int(node.get("imds_port", 0)),
    )


def _stop_pending() -> bool:
    return bool(signal.sigpending() & STOP_SIGNALS)


def up(args: argparse.Namespace) -> int:
    config, node = load_config(args.config)
    options = up_options(args, node)
    if options.datapath and os.geteuid() != 0:
        raise SystemExit(
            "the datapath needs root (it creates network namespaces): run as root, or pass --no-datapath "
            "for EC2, IMDS and the Kubernetes API on loopback only"
        )
    # Block the stop signals before any thread starts (threads inherit the mask) and wait for them
    # synchronously: setting an Event from a Python signal handler can deadlock on the Event's own lock.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    testbed = TestbedUp(cloud_config=config, options=options)
    try:
        try:
            info = testbed.start(interrupted=_stop_pending)
        except StartInterrupted:
            log.info("stop signal received while starting; everything is torn down")
            return 0
        except Exception as exc:  # already torn down by start(); -v shows the traceback
            log.error("the testbed did not come up (nothing is left behind): %s", exc, exc_info=args.verbose)
            return 1
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        log.info(
            "testbed up: %d node(s), EC2 %s, Kubernetes API %s; SIGTERM or Ctrl-C to stop",
            len(info["nodes"]),
            info["ec2_endpoint"],
            info["kube_api_url"],
        )
        received = signal.sigwait(STOP_SIGNALS)
        log.info("stopping the testbed (%s)", signal.Signals(received).name)
    finally:
        testbed.stop()
    log.info("testbed stopped")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpccni-testbed", description="A hermetic AWS cluster for vpccni.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser(
        "up",
        help="start EC2, IMDS, the Kubernetes API and N nodes; print them as JSON; run until signalled",
    )
    p_up.add_argument(
        "--instance-type", default=None, help="EC2 instance type of every node (default m5.large)"
    )
    p_up.add_argument("--nodes", type=_positive, default=1, help="how many nodes (default 1)")
    p_up.add_argument("--config", type=Path, default=None, help="JSON file of CloudConfig fields")
    p_up.add_argument(
        "--no-datapath",
        action="store_true",
        help="no network namespaces (no root needed): EC2, IMDS and the Kubernetes API on loopback only",
    )
    p_up.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
