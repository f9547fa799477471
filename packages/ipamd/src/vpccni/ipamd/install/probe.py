"""A grpc-health-probe compatible command for the liveness and readiness probes.

    python -m vpccni.ipamd.install.probe -addr=unix:///var/run/aws-node/ipamd.sock -connect-timeout=5s \
        -rpc-timeout=5s

Flags and exit codes are grpc-health-probe's (0 serving, 1 bad flags, 2 connection, 3 rpc, 4 not serving), so
the DaemonSet's probe lines stay upstream's apart from the command.
"""

from __future__ import annotations

import argparse
import re
import sys

from vpccni.ipamd.install.health import HealthOutcome, check_health

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0}


def parse_duration(text: str) -> float:
    """A Go duration such as `5s`, `500ms` or `1m`, in seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 5s or 500ms")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(HealthOutcome.INVALID_ARGUMENTS)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="grpc-health-probe", description="gRPC health check of ipamd")
    p.add_argument("-addr", "--addr", required=True, help="unix:///path or host:port")
    p.add_argument("-service", "--service", default="", help="service name to check (default: the server)")
    p.add_argument("-connect-timeout", "--connect-timeout", type=parse_duration, default=1.0)
    p.add_argument("-rpc-timeout", "--rpc-timeout", type=parse_duration, default=1.0)
    p.add_argument("-v", "--v", action="store_true", help="print the status on success")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = check_health(
        args.addr,
        service=args.service,
        connect_timeout_s=args.connect_timeout,
        rpc_timeout_s=args.rpc_timeout,
    )
    if not result.healthy or args.v:
        print(result.detail, file=sys.stderr)
    return int(result.outcome)


if __name__ == "__main__":
    sys.exit(main())
