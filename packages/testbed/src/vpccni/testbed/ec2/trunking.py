"""Trunk and branch ENIs (security groups for pods), which moto does not have: `InterfaceType` on
CreateNetworkInterface, and Associate-/Disassociate-/DescribeTrunkInterfaceAssociations with VLAN ids.

As EC2: a branch ENI is never attached to an instance, it is associated with an attached trunk under a VLAN
id unique on that trunk; a trunk carries at most the instance type's branch limit (the VPC resource
controller's table, `vpccni.awsutils.trunking`); a trunk with branches cannot be detached or deleted;
deleting a branch ends its association. EC2 documents no error codes for these calls: the refusals use the
codes of its neighbouring calls (`InvalidParameterValue`, `InvalidNetworkInterface.InUse`) and
`BranchInterfaceLimitExceeded` for the limit.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from vpccni.awsutils.trunking import branch_interfaces
from vpccni.testbed.ec2 import xmlpatch
from vpccni.testbed.ec2.backend import MotoBackend
from vpccni.testbed.ec2.errors import Ec2Error
from vpccni.testbed.ec2.query import filters, indexed, integer
from vpccni.testbed.events import BranchAssociated, BranchDisassociated, Event

Params = dict[str, str]
Reply = tuple[bytes, list[Event]]  # the response body and the events to publish
INTERFACE_TYPES = frozenset({"interface", "trunk", "branch", "efa", "efa-only"})
MAX_VLAN_ID = 4094


@dataclass(frozen=True, kw_only=True)
class Association:
    association_id: str
    branch_eni_id: str
    trunk_eni_id: str
    vlan_id: int

    def xml(self) -> dict[str, str]:
        return {
            "associationId": self.association_id,
            "branchInterfaceId": self.branch_eni_id,
            "trunkInterfaceId": self.trunk_eni_id,
            "interfaceProtocol": "VLAN",
            "vlanId": str(self.vlan_id),
        }


class Trunking:
    """The associations, and the checks and answers of the trunk calls (run under the EC2 state lock)."""

    def __init__(self, *, backend: MotoBackend) -> None:
        self._backend = backend
        self._by_id: dict[str, Association] = {}
        self._ids = itertools.count(1)

    # ---- state views
    def associations(self) -> list[Association]:
        return list(self._by_id.values())

    def of_branch(self, eni_id: str) -> Association | None:
        return next((a for a in self._by_id.values() if a.branch_eni_id == eni_id), None)

    def of_trunk(self, eni_id: str) -> list[Association]:
        return [a for a in self._by_id.values() if a.trunk_eni_id == eni_id]

    def interface_type(self, eni_id: str) -> str:
        return str(getattr(self._backend.raw.enis.get(eni_id), "interface_type", "interface"))

    # ---- checks the ENI calls make
    def create_type(self, params: Params) -> tuple[Params, str]:
        """CreateNetworkInterface's `InterfaceType`, taken out of the call moto answers."""
        kind = params.get("InterfaceType", "interface")
        if kind not in INTERFACE_TYPES:
            raise Ec2Error(
                "InvalidParameterValue", f"Value ({kind}) for parameter interfaceType is invalid: use one of "
                f"{', '.join(sorted(INTERFACE_TYPES - {'interface'}))}",
            )  # fmt: skip
        return {k: v for k, v in params.items() if k != "InterfaceType"}, kind

    def set_type(self, eni_id: str, kind: str) -> None:
        self._backend.eni(eni_id).interface_type = kind

    def check_attach(self, eni_id: str, instance_type: str) -> None:
        kind = self.interface_type(eni_id)
        if kind == "branch":
            raise Ec2Error(
                "InvalidParameterValue",
                f"{eni_id} is a branch network interface: associate it with a trunk, it cannot be attached",
            )
        if kind != "trunk":
            return
        limit = branch_interfaces(instance_type)
        if limit is None:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Instance type {instance_type} is not in the testbed's branch table "
                "(vpccni.awsutils.trunking_data): use a type it lists, such as m5.large",
            )
        if limit == 0:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Instance type {instance_type} does not support trunk network interfaces",
            )

    def check_detach_or_delete(self, eni_id: str) -> None:
        branches = self.of_trunk(eni_id)
        if branches:
            raise Ec2Error(
                "InvalidNetworkInterface.InUse",
                f"Trunk network interface {eni_id} has {len(branches)} branch associations: disassociate or "
                "delete its branch interfaces first",
            )

    def forget(self, eni_id: str) -> list[Event]:
        """The ENI is gone (deleted, or deleted with its instance): its associations end with it."""
        gone = [a for a in self._by_id.values() if eni_id in (a.branch_eni_id, a.trunk_eni_id)]
        for association in gone:
            del self._by_id[association.association_id]
        return [BranchDisassociated(branch_eni_id=a.branch_eni_id, trunk_eni_id=a.trunk_eni_id) for a in gone]

    # ---- the trunk calls
    def associate(self, params: Params) -> Reply:
        branch_id, trunk_id = params.get("BranchInterfaceId", ""), params.get("TrunkInterfaceId", "")
        branch, trunk = self._backend.eni(branch_id), self._backend.eni(trunk_id)
        if self.interface_type(branch_id) != "branch":
            raise Ec2Error("InvalidParameterValue", f"{branch_id} is not a branch network interface")
        if self.interface_type(trunk_id) != "trunk":
            raise Ec2Error("InvalidParameterValue", f"{trunk_id} is not a trunk network interface")
        if trunk.instance is None:
            raise Ec2Error(
                "IncorrectState", f"Trunk network interface {trunk_id} is not attached to an instance"
            )
        if branch.subnet.vpc_id != trunk.subnet.vpc_id:
            raise Ec2Error("InvalidParameterValue", f"{branch_id} and {trunk_id} are in different VPCs")
        if "GreKey" in params:
            raise Ec2Error("InvalidParameterValue", "GRE associations are not supported: use VlanId")
        vlan = integer(params, "VlanId")
        if not 1 <= vlan <= MAX_VLAN_ID:
            raise Ec2Error("InvalidParameterValue", f"VlanId {vlan} is out of range 1-{MAX_VLAN_ID}")
        if self.of_branch(branch_id) is not None:
            raise Ec2Error("InvalidParameterValue", f"{branch_id} is already associated with a trunk")
        on_trunk = self.of_trunk(trunk_id)
        if any(a.vlan_id == vlan for a in on_trunk):
            raise Ec2Error("InvalidParameterValue", f"VLAN {vlan} is already in use on trunk {trunk_id}")
        limit = branch_interfaces(trunk.instance.instance_type) or 0
        if len(on_trunk) >= limit:
            raise Ec2Error(
                "BranchInterfaceLimitExceeded",
                f"Trunk {trunk_id} on {trunk.instance.instance_type} already has {len(on_trunk)} branch "
                f"interfaces, the limit of its instance type",
            )
        association = Association(
            association_id=f"trunk-assoc-{next(self._ids):08x}{secrets.token_hex(4)}",
            branch_eni_id=branch_id,
            trunk_eni_id=trunk_id,
            vlan_id=vlan,
        )
        self._by_id[association.association_id] = association
        body = xmlpatch.render(
            "AssociateTrunkInterface",
            [("clientToken", params.get("ClientToken", "")), ("interfaceAssociation", association.xml())],
        )
        event = BranchAssociated(
            branch_eni_id=branch_id, trunk_eni_id=trunk_id, vlan_id=vlan, mac=branch.mac_address
        )
        return body, [event]

    def disassociate(self, params: Params) -> Reply:
        association = self._by_id.pop(params.get("AssociationId", ""), None)
        if association is None:
            raise Ec2Error(
                "InvalidAssociationID.NotFound",
                f"The association ID '{params.get('AssociationId')}' does not exist",
            )
        body = xmlpatch.render(
            "DisassociateTrunkInterface", [("return", "true"), ("clientToken", params.get("ClientToken", ""))]
        )
        event = BranchDisassociated(
            branch_eni_id=association.branch_eni_id, trunk_eni_id=association.trunk_eni_id
        )
        return body, [event]

    def describe(self, params: Params) -> Reply:
        wanted_ids = set(indexed(params, "AssociationId"))
        wanted = filters(params)
        picks: dict[str, Callable[[Association], str]] = {
            "trunk-interface-association.id": lambda a: a.association_id,
            "trunk-interface-association.branch-interface-id": lambda a: a.branch_eni_id,
            "trunk-interface-association.trunk-interface-id": lambda a: a.trunk_eni_id,
        }
        unknown = set(wanted) - set(picks)
        if unknown:
            raise Ec2Error("InvalidParameterValue", f"The filter '{sorted(unknown)[0]}' is invalid")
        found = [
            a
            for a in self._by_id.values()
            if (not wanted_ids or a.association_id in wanted_ids)
            and all(picks[name](a) in values for name, values in wanted.items())
        ]
        body = xmlpatch.render(
            "DescribeTrunkInterfaceAssociations", [("interfaceAssociationSet", [a.xml() for a in found])]
        )
        return body, []
