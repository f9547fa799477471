"""`eni-max-pods.txt` (`/app/eni-max-pods.txt` upstream): max pods per instance type, from awsutils' table.

    python -m vpccni.ipamd.install.maxpods OUT

Same format as upstream's file (comment header, then `<instance-type> <max-pods>` lines sorted by type), so
node bootstrap scripts that grep it keep working.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vpccni.awsutils.limits import known_instance_types, max_pods, static_limits
from vpccni.ipamd.install.files import write_atomic

HEADER = """\
# Mapping is calculated from the EC2 instance-type limits (vpccni.awsutils.limits) with this formula:
# * First IP on each ENI is not used for pods
# * +2 for the pods that use host-networking (AWS CNI and kube-proxy)
#
#   # of ENI * (# of IPv4 per ENI - 1) + 2
#
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-eni.html#AvailableIpPerENI
#
"""


def render_eni_max_pods() -> str:
    lines = [HEADER]
    for instance_type in known_instance_types():
        limits = static_limits(instance_type)
        if limits is not None:
            lines.append(f"{instance_type} {max_pods(limits)}\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vpccni.ipamd.install.maxpods OUT", file=sys.stderr)
        return 2
    write_atomic(Path(args[0]), render_eni_max_pods().encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
