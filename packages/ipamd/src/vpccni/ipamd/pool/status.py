"""What the pool manager tells the allocator about why the pool cannot grow, so ADD errors say what to do."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GrowthState(enum.Enum):
    OK = "ok"
    GROWING = "growing"
    AT_MAX_PODS = "at_max_pods"
    SUBNET_EXHAUSTED = "subnet_exhausted"
    THROTTLED = "throttled"
    NO_ENI_SLOTS = "no_eni_slots"
    PROVISIONING_DISABLED = "provisioning_disabled"
    UNSCHEDULABLE = "unschedulable"
    TERMINATING = "terminating"
    CLOUD_ERROR = "cloud_error"
    ENI_SETUP_FAILED = "eni_setup_failed"


_HINTS: dict[GrowthState, str] = {
    GrowthState.OK: "the pool meets its warm targets",
    GrowthState.GROWING: "ipamd is adding addresses now; the pod will get one shortly",
    GrowthState.AT_MAX_PODS: (
        "the node runs its maximum number of pods; schedule the pod elsewhere or raise max pods"
    ),
    GrowthState.SUBNET_EXHAUSTED: (
        "EC2 reported {subnet} without free addresses (or a contiguous /28 for a prefix) and no other"
        " subnet can take a new ENI; add a subnet tagged kubernetes.io/role/cni=1 in this AZ, use subnet CIDR"
        " reservations for prefix mode, or free addresses. ipamd asks again {retry}"
    ),
    GrowthState.THROTTLED: (
        "EC2 is throttling this account's calls ({detail}); ipamd asks again {retry}, pods waiting for an"
        " address first. If it lasts: raise the account's EC2 request limits, use prefix delegation, or avoid"
        " WARM_IP_TARGET on large clusters"
    ),
    GrowthState.NO_ENI_SLOTS: (
        "every ENI is full and the instance takes no more ENIs; use a larger instance type, raise MAX_ENI,"
        " or enable prefix delegation"
    ),
    GrowthState.PROVISIONING_DISABLED: (
        "DISABLE_NETWORK_RESOURCE_PROVISIONING is set, so ipamd never adds addresses;"
        " assign them to the node's ENIs"
    ),
    GrowthState.UNSCHEDULABLE: (
        "the node is unschedulable; set AWS_MANAGE_ENIS_NON_SCHEDULABLE=true"
        " to let ipamd grow the pool anyway"
    ),
    GrowthState.TERMINATING: "ipamd is shutting down and changes nothing",
    GrowthState.CLOUD_ERROR: "an EC2 call failed: {detail}; ipamd retries on the next pool iteration",
    GrowthState.ENI_SETUP_FAILED: (
        "ENI {detail} is attached but its host networking (route table, rules) failed; the reconciler retries"
        " it, see ipamd.log for the netlink error"
    ),
}


@dataclass(frozen=True, kw_only=True)
class PoolStatus:
    state: GrowthState = GrowthState.OK
    subnet_ids: tuple[str, ...] = ()  # SUBNET_EXHAUSTED: the subnets resting after EC2 called them full
    detail: str = ""
    retry_after_s: float | None = None

    @property
    def may_grow_soon(self) -> bool:
        """Whether an ADD that found no free address should wait for the pool instead of failing now."""
        return self.state in (GrowthState.GROWING, GrowthState.OK, GrowthState.THROTTLED)

    @property
    def retryable(self) -> bool:
        """Whether the pool can still grow later (CNI code 11, try again) rather than never without a change
        by the operator or the scheduler (999)."""
        return self.state not in _FINAL

    @property
    def message(self) -> str:
        subnets = ", ".join(self.subnet_ids) if self.subnet_ids else "the subnet"
        subnet = f"subnet{'s' if len(self.subnet_ids) > 1 else ''} {subnets}" if self.subnet_ids else subnets
        retry = f"in {self.retry_after_s:.0f} s" if self.retry_after_s is not None else "shortly"
        return _HINTS[self.state].format(subnet=subnet, detail=self.detail, retry=retry)


# The pool cannot grow until the operator changes something (or a pod leaves).
_FINAL = frozenset(
    {
        GrowthState.AT_MAX_PODS,
        GrowthState.NO_ENI_SLOTS,
        GrowthState.PROVISIONING_DISABLED,
        GrowthState.UNSCHEDULABLE,
    }
)
