"""`FakeEC2`: an in-memory `EC2Api` for one VPC, for tests only (product code never imports this module).

It keeps subnets, instances, ENIs, IPs, /28 prefixes and tags in boto3's shapes, enforces the per-type ENI and
IP limits of the static table, and fails calls a test queued. Import it from `vpccni.awsutils.testing`, the
fakes' public module.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vpccni.awsutils.errors import error_from_response
from vpccni.awsutils.limits import static_limits


class FakeEC2:
    """In-memory EC2 (boto3 shapes) for one VPC and AZ. Enforces per-type ENI/IP limits and free addresses."""

    def __init__(self, *, vpc_cidr: str = "10.0.0.0/16", region: str = "us-west-2") -> None:
        self.region = region
        self.availability_zone = region + "a"
        self.vpc_id = "vpc-0fake"
        self.vpc_cidr = vpc_cidr
        self.subnets: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.enis: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._errors: dict[str, list[str]] = {}
        self._used: dict[str, set[ipaddress.IPv4Address]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        # Told of every ENI AttachNetworkInterface attached (a test plugs a link with its MAC into a host).
        self.on_attach: Callable[[dict[str, Any]], None] = lambda eni: None

    # ---- set-up and fault injection ---------------------------------------------------------------
    def add_subnet(self, cidr: str, *, tags: Mapping[str, str] | None = None) -> str:
        subnet_id = f"subnet-{next(self._ids):08x}"
        self.subnets[subnet_id] = {
            "SubnetId": subnet_id,
            "VpcId": self.vpc_id,
            "AvailabilityZone": self.availability_zone,
            "CidrBlock": cidr,
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        }
        net = ipaddress.IPv4Network(cidr)
        # EC2 reserves the first four addresses and the last one of every subnet.
        self._used[subnet_id] = {net[i] for i in range(4)} | {net[-1]}
        return subnet_id

    def launch_instance(
        self, instance_type: str, subnet_id: str, *, security_groups: Sequence[str] = ("sg-1",)
    ) -> str:
        instance_id = f"i-{next(self._ids):017x}"
        self.instances[instance_id] = {"InstanceId": instance_id, "InstanceType": instance_type}
        eni = self._new_eni(subnet_id, list(security_groups), 0, 0, "primary network interface", [])
        self._attach(eni["NetworkInterfaceId"], instance_id, 0, 0)
        return instance_id

    def fail_next(self, api: str, code: str, count: int = 1) -> None:
        """The next ``count`` calls of ``api`` fail with ``code``."""
        self._errors.setdefault(api, []).extend([code] * count)

    def _enter(self, api: str, params: dict[str, Any]) -> None:
        self.calls.append((api, params))
        queue = self._errors.get(api)
        if queue:
            code = queue.pop(0)
            raise error_from_response(
                api,
                {"Error": {"Code": code, "Message": f"injected {code}"}},
                subnet_id=str(params.get("SubnetId", "")),
            )

    def _fail(self, api: str, code: str, message: str, subnet_id: str = "") -> Exception:
        return error_from_response(api, {"Error": {"Code": code, "Message": message}}, subnet_id=subnet_id)

    def api_names(self) -> list[str]:
        return [c[0] for c in self.calls]

    # ---- address bookkeeping ---------------------------------------------------------------------
    def _free_count(self, subnet_id: str) -> int:
        return ipaddress.IPv4Network(self.subnets[subnet_id]["CidrBlock"]).num_addresses - len(
            self._used[subnet_id]
        )

    def _take_ips(self, api: str, subnet_id: str, n: int) -> list[str]:
        if self._free_count(subnet_id) < n:
            raise self._fail(api, "InsufficientFreeAddressesInSubnet", "no free addresses", subnet_id)
        out: list[str] = []
        for ip in ipaddress.IPv4Network(self.subnets[subnet_id]["CidrBlock"]):
            if len(out) == n:
                break
            if ip not in self._used[subnet_id]:
                self._used[subnet_id].add(ip)
                out.append(str(ip))
        return out

    def _take_prefixes(self, api: str, subnet_id: str, n: int) -> list[str]:
        out: list[str] = []
        used = self._used[subnet_id]
        for block in ipaddress.IPv4Network(self.subnets[subnet_id]["CidrBlock"]).subnets(new_prefix=28):
            if len(out) == n:
                break
            if not any(ip in used for ip in block):
                used.update(block)
                out.append(str(block))
        if len(out) < n:
            for p in out:
                used.difference_update(ipaddress.IPv4Network(p))
            raise self._fail(api, "InsufficientCidrBlocks", "no free /28", subnet_id)
        return out

    def _check_ip_limit(self, api: str, eni: dict[str, Any], extra: int) -> None:
        att = eni.get("Attachment") or {}
        inst = self.instances.get(att.get("InstanceId", ""))
        limits = static_limits(inst["InstanceType"]) if inst else None
        have = len(eni["PrivateIpAddresses"]) + len(eni["Ipv4Prefixes"])
        if limits is not None and have + extra > limits.ipv4_per_eni:
            raise self._fail(api, "PrivateIpAddressLimitExceeded", "too many addresses on the ENI")

    def _new_eni(
        self,
        subnet_id: str,
        groups: list[str],
        n_ips: int,
        n_prefixes: int,
        description: str,
        tags: list[dict[str, str]],
    ) -> dict[str, Any]:
        api = "CreateNetworkInterface"
        if subnet_id not in self.subnets:
            raise self._fail(api, "InvalidSubnetID.NotFound", f"subnet {subnet_id} does not exist")
        ips = self._take_ips(api, subnet_id, 1 + n_ips)
        prefixes = self._take_prefixes(api, subnet_id, n_prefixes) if n_prefixes else []
        n = next(self._ids)
        eni_id = f"eni-{n:017x}"
        eni: dict[str, Any] = {
            "NetworkInterfaceId": eni_id,
            "MacAddress": f"02:00:00:00:{n // 256:02x}:{n % 256:02x}",
            "SubnetId": subnet_id,
            "VpcId": self.vpc_id,
            "Status": "available",
            "Description": description,
            "InterfaceType": "interface",
            "Groups": [{"GroupId": g} for g in groups],
            "PrivateIpAddress": ips[0],
            "PrivateIpAddresses": [{"PrivateIpAddress": ip, "Primary": i == 0} for i, ip in enumerate(ips)],
            "Ipv4Prefixes": [{"Ipv4Prefix": p} for p in prefixes],
            "Ipv6Addresses": [],
            "Ipv6Prefixes": [],
            "TagSet": list(tags),
        }
        self.enis[eni_id] = eni
        return eni

    def _attach(self, eni_id: str, instance_id: str, device_index: int, card: int) -> str:
        eni = self.enis[eni_id]
        att_id = f"eni-attach-{next(self._ids):08x}"
        eni["Attachment"] = {
            "AttachmentId": att_id,
            "InstanceId": instance_id,
            "DeviceIndex": device_index,
            "NetworkCardIndex": card,
            "DeleteOnTermination": device_index == 0,
            "Status": "attached",
        }
        eni["Status"] = "in-use"
        return att_id

    def _eni(self, api: str, eni_id: str) -> dict[str, Any]:
        if eni_id not in self.enis:
            raise self._fail(
                api,
                "InvalidNetworkInterfaceID.NotFound",
                f"The networkInterface ID '{eni_id}' does not exist",
            )
        return self.enis[eni_id]

    # ---- EC2Api ----------------------------------------------------------------------------------
    def describe_instance_types(self, instance_types: Sequence[str]) -> list[dict[str, Any]]:
        with self._lock:
            self._enter("DescribeInstanceTypes", {"InstanceTypes": list(instance_types)})
            return []

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        with self._lock:
            self._enter("DescribeInstances", {"InstanceIds": [instance_id]})
            attached = [
                dict(e)
                for e in self.enis.values()
                if (e.get("Attachment") or {}).get("InstanceId") == instance_id
            ]
            return {**self.instances[instance_id], "NetworkInterfaces": attached}

    def describe_network_interfaces(
        self, *, eni_ids: Sequence[str] = (), filters: Sequence[Mapping[str, Any]] = ()
    ) -> list[dict[str, Any]]:
        with self._lock:
            self._enter(
                "DescribeNetworkInterfaces", {"NetworkInterfaceIds": list(eni_ids), "Filters": list(filters)}
            )
            missing = [e for e in eni_ids if e not in self.enis]
            if missing:
                raise self._fail(
                    "DescribeNetworkInterfaces",
                    "InvalidNetworkInterfaceID.NotFound",
                    f"The networkInterface ID '{missing[0]}' does not exist",
                )
            found = [self.enis[e] for e in eni_ids] if eni_ids else list(self.enis.values())
            return [dict(e) for e in found if all(_matches(e, f) for f in filters)]

    def describe_subnets(self, *, filters: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            self._enter("DescribeSubnets", {"Filters": list(filters)})
            return [
                {**s, "AvailableIpAddressCount": self._free_count(sid)} for sid, s in self.subnets.items()
            ]

    def create_network_interface(self, **params: Any) -> dict[str, Any]:
        with self._lock:
            self._enter("CreateNetworkInterface", params)
            tags = [t for spec in params.get("TagSpecifications", []) for t in spec.get("Tags", [])]
            return dict(
                self._new_eni(
                    params["SubnetId"],
                    list(params.get("Groups", [])),
                    int(params.get("SecondaryPrivateIpAddressCount", 0)),
                    int(params.get("Ipv4PrefixCount", 0)),
                    str(params.get("Description", "")),
                    tags,
                )
            )

    def attach_network_interface(
        self, *, eni_id: str, instance_id: str, device_index: int, network_card: int
    ) -> str:
        with self._lock:
            self._enter("AttachNetworkInterface", {"NetworkInterfaceId": eni_id, "DeviceIndex": device_index})
            limits = static_limits(self.instances[instance_id]["InstanceType"])
            attached = [
                e["Attachment"]
                for e in self.enis.values()
                if (e.get("Attachment") or {}).get("InstanceId") == instance_id
            ]
            on_card = [a for a in attached if a.get("NetworkCardIndex", 0) == network_card]
            if limits is not None and (
                len(attached) >= limits.max_enis or len(on_card) >= limits.max_enis_on_card(network_card)
            ):
                raise self._fail("AttachNetworkInterface", "AttachmentLimitExceeded", "too many ENIs")
            attachment = self._attach(
                self._eni("AttachNetworkInterface", eni_id)["NetworkInterfaceId"],
                instance_id,
                device_index,
                network_card,
            )
            self.on_attach(dict(self.enis[eni_id]))
            return attachment

    def modify_network_interface_attribute(self, **params: Any) -> None:
        with self._lock:
            self._enter("ModifyNetworkInterfaceAttribute", params)
            eni = self._eni("ModifyNetworkInterfaceAttribute", params["NetworkInterfaceId"])
            if "Attachment" in params:
                eni["Attachment"]["DeleteOnTermination"] = params["Attachment"]["DeleteOnTermination"]
            if "Groups" in params:
                eni["Groups"] = [{"GroupId": g} for g in params["Groups"]]

    def detach_network_interface(self, *, attachment_id: str) -> None:
        with self._lock:
            self._enter("DetachNetworkInterface", {"AttachmentId": attachment_id})
            for eni in self.enis.values():
                if (eni.get("Attachment") or {}).get("AttachmentId") == attachment_id:
                    eni.pop("Attachment")
                    eni["Status"] = "available"
                    return
            raise self._fail("DetachNetworkInterface", "InvalidAttachmentID.NotFound", attachment_id)

    def delete_network_interface(self, *, eni_id: str) -> None:
        with self._lock:
            self._enter("DeleteNetworkInterface", {"NetworkInterfaceId": eni_id})
            eni = self._eni("DeleteNetworkInterface", eni_id)
            if eni.get("Attachment"):
                raise self._fail("DeleteNetworkInterface", "InvalidParameterValue", "ENI is attached")
            used = self._used[eni["SubnetId"]]
            for a in eni["PrivateIpAddresses"]:
                used.discard(ipaddress.IPv4Address(a["PrivateIpAddress"]))
            for p in eni["Ipv4Prefixes"]:
                used.difference_update(ipaddress.IPv4Network(p["Ipv4Prefix"]))
            del self.enis[eni_id]

    def create_tags(self, *, resources: Sequence[str], tags: Mapping[str, str]) -> None:
        with self._lock:
            self._enter("CreateTags", {"Resources": list(resources), "Tags": dict(tags)})
            for eni_id in resources:
                eni = self._eni("CreateTags", eni_id)
                current = {t["Key"]: t["Value"] for t in eni["TagSet"]} | dict(tags)
                eni["TagSet"] = [{"Key": k, "Value": v} for k, v in current.items()]

    def assign_private_ip_addresses(
        self, *, eni_id: str, ip_count: int = 0, prefix_count: int = 0
    ) -> dict[str, Any]:
        api = "AssignPrivateIpAddresses"
        with self._lock:
            self._enter(
                api, {"NetworkInterfaceId": eni_id, "ip_count": ip_count, "prefix_count": prefix_count}
            )
            eni = self._eni(api, eni_id)
            self._check_ip_limit(api, eni, ip_count + prefix_count)
            if prefix_count:
                new = self._take_prefixes(api, eni["SubnetId"], prefix_count)
                eni["Ipv4Prefixes"] += [{"Ipv4Prefix": p} for p in new]
                return {
                    "NetworkInterfaceId": eni_id,
                    "AssignedIpv4Prefixes": [{"Ipv4Prefix": p} for p in new],
                }
            ips = self._take_ips(api, eni["SubnetId"], ip_count)
            eni["PrivateIpAddresses"] += [{"PrivateIpAddress": ip, "Primary": False} for ip in ips]
            return {
                "NetworkInterfaceId": eni_id,
                "AssignedPrivateIpAddresses": [{"PrivateIpAddress": ip} for ip in ips],
            }

    def unassign_private_ip_addresses(
        self, *, eni_id: str, ips: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None:
        api = "UnassignPrivateIpAddresses"
        with self._lock:
            self._enter(
                api,
                {
                    "NetworkInterfaceId": eni_id,
                    "PrivateIpAddresses": list(ips),
                    "Ipv4Prefixes": list(prefixes),
                },
            )
            eni = self._eni(api, eni_id)
            used = self._used[eni["SubnetId"]]
            eni["PrivateIpAddresses"] = [
                a for a in eni["PrivateIpAddresses"] if a["Primary"] or a["PrivateIpAddress"] not in ips
            ]
            eni["Ipv4Prefixes"] = [p for p in eni["Ipv4Prefixes"] if p["Ipv4Prefix"] not in prefixes]
            used.difference_update(ipaddress.IPv4Address(i) for i in ips)
            for p in prefixes:
                used.difference_update(ipaddress.IPv4Network(p))

    def assign_ipv6_addresses(self, *, eni_id: str, prefix_count: int) -> dict[str, Any]:
        with self._lock:
            self._enter(
                "AssignIpv6Addresses", {"NetworkInterfaceId": eni_id, "Ipv6PrefixCount": prefix_count}
            )
            eni = self._eni("AssignIpv6Addresses", eni_id)
            new = [f"2600:1f14:0:{len(self.enis):x}:{next(self._ids):x}::/80" for _ in range(prefix_count)]
            eni["Ipv6Prefixes"] += [{"Ipv6Prefix": p} for p in new]
            return {"NetworkInterfaceId": eni_id, "AssignedIpv6Prefixes": new}

    def unassign_ipv6_addresses(self, *, eni_id: str, prefixes: Sequence[str]) -> None:
        with self._lock:
            self._enter(
                "UnassignIpv6Addresses", {"NetworkInterfaceId": eni_id, "Ipv6Prefixes": list(prefixes)}
            )
            eni = self._eni("UnassignIpv6Addresses", eni_id)
            eni["Ipv6Prefixes"] = [p for p in eni["Ipv6Prefixes"] if p["Ipv6Prefix"] not in prefixes]


def _matches(eni: Mapping[str, Any], flt: Mapping[str, Any]) -> bool:
    name, values = str(flt["Name"]), [str(v) for v in flt["Values"]]
    tags = {t["Key"]: t["Value"] for t in eni.get("TagSet", [])}
    if name == "tag-key":
        return any(v in tags for v in values)
    if name.startswith("tag:"):
        return tags.get(name[4:]) in values
    if name == "attachment.instance-id":
        return str((eni.get("Attachment") or {}).get("InstanceId", "")) in values
    field_of = {
        "status": "Status",
        "vpc-id": "VpcId",
        "subnet-id": "SubnetId",
        "description": "Description",
        "network-interface-id": "NetworkInterfaceId",
    }
    return str(eni.get(field_of.get(name, name), "")) in values
