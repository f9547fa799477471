"""Security groups for pods per instance type: whether it can have a trunk ENI, and how many branch ENIs.

EC2 does not publish these; the VPC resource controller keeps them in a table (`pkg/aws/vpc/limits.go`,
`IsTrunkingCompatible` and `BranchInterface`), which upstream ipamd vendors. `trunking_data` holds its
figures (`scripts/gen_branch_limits.py` regenerates it from that file). Upstream treats a type the table
does not know as trunking compatible; so does `trunking_compatible`.
"""

from __future__ import annotations

from vpccni.awsutils.trunking_data import BRANCH_INTERFACES


def branch_interfaces(instance_type: str) -> int | None:
    """Branch ENIs a trunk of this instance type may carry (0: no trunk at all), None when unknown."""
    return BRANCH_INTERFACES.get(instance_type)


def trunking_compatible(instance_type: str) -> bool:
    """Whether ipamd keeps an ENI slot free for a trunk (upstream: unknown types count as compatible)."""
    return branch_interfaces(instance_type) != 0
