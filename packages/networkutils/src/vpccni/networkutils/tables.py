"""Route-table numbering and ip rule priorities (docs/design/upstream-contract.md §4)."""

from __future__ import annotations

from .model import MAIN_TABLE

# ip rule priorities that are part of the compatibility contract.
POD_INTERFACE_RULE_PRIORITY = 1  # inside the pod netns, for interface index i > 0
VLAN_RULE_PRIORITY = 10  # branch-ENI pods, strict mode: `iif vlan.eth.<id>` and `iif <host veth>`
LOCAL_RULE_PRIORITY_SGP = 20  # the `local` table's rule, moved below the VLAN rules in strict mode
TO_POD_RULE_PRIORITY = 512
CONNMARK_RULE_PRIORITY = 1024
EXTERNAL_SERVICE_RULE_PRIORITY = 1535
FROM_POD_RULE_PRIORITY = 1536
ENI_RULE_PRIORITY = 32765

# A branch ENI's table: its VLAN id + 100 (above every ENI table of card 0).
VLAN_TABLE_OFFSET = 100

# amazon-ec2-net-utils numbering for ENIs on network cards > 0.
MULTI_CARD_TABLE_BASE = 10000
MULTI_CARD_STRIDE = 100


def route_table_for_eni(device_number: int, network_card: int = 0) -> int:
    """An ENI's route table: main for the primary, device + 1 on card 0, else 10000 + device + 100*card."""
    if device_number < 0 or network_card < 0:
        raise ValueError(f"device number {device_number} and network card {network_card} must be >= 0")
    if network_card == 0:
        return MAIN_TABLE if device_number == 0 else device_number + 1
    return MULTI_CARD_TABLE_BASE + device_number + MULTI_CARD_STRIDE * network_card


def route_table_for_vlan(vlan_id: int) -> int:
    """A branch-ENI pod's table: VLAN id + 100, as upstream numbers it."""
    if vlan_id < 1:
        raise ValueError(f"VLAN id {vlan_id} must be >= 1 (0 means: not a branch ENI)")
    return vlan_id + VLAN_TABLE_OFFSET
