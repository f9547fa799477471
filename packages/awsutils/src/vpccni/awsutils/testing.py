"""Stateful fakes for tests (product code never imports this module).

- :class:`FakeClock`: manual monotonic and wall time; ``sleep`` advances it and records the wait.
- :class:`RecordingObserver`: an :class:`ApiObserver` that keeps every call and throttle wait.
- :class:`FakeImds`: an in-memory IMDS map (a :class:`MetadataSource`), fillable from :class:`FakeEC2`.
- :class:`FakeEC2`: an in-memory :class:`EC2Api` for one VPC: subnets, instances, ENIs, IPs, /28 prefixes,
  tags, per-type ENI/IP limits from the static table, and queued error injection (kept in ``testing_ec2``;
  this module is where users import it from).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vpccni.awsutils.errors import ImdsNotFoundError
from vpccni.awsutils.testing_ec2 import FakeEC2

__all__ = ["FakeClock", "FakeEC2", "FakeImds", "RecordingObserver"]


class FakeClock:
    """The `Clock` of every test: monotonic and wall time move only when told.

    ``sleep`` advances the time at once and records the wait. ``wait`` does the same by default (code that
    only has to get past its waits); with ``waits_advance=False`` it blocks until the event is set or the
    test has advanced the time past its deadline, so background loops (a whole daemon's) step only as far
    as the test moves the time.
    """

    def __init__(self, *, start: dt.datetime | None = None, waits_advance: bool = True) -> None:
        self._mono = 1000.0
        self._wall = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._waits_advance = waits_advance
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def now(self) -> dt.datetime:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall += dt.timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if self._waits_advance:
            self.sleep(seconds)
            # Yield so a stopping thread gets to run; time itself moved instantly.
            return event.wait(0.001)
        deadline = self.monotonic() + max(0.0, seconds)
        while not event.wait(0.002):
            if self.monotonic() >= deadline:
                return False
        return True


@dataclass
class RecordingObserver:
    calls: list[tuple[str, float, str | None]] = field(default_factory=list)
    throttle_waits: list[tuple[str, float]] = field(default_factory=list)

    def on_call(self, api: str, duration_s: float, error_code: str | None) -> None:
        self.calls.append((api, duration_s, error_code))

    def on_throttle_wait(self, category: str, seconds: float) -> None:
        self.throttle_waits.append((category, seconds))

    def apis(self) -> list[str]:
        return [c[0] for c in self.calls]


class FakeImds:
    """Path (relative to ``latest/meta-data/``) to body; missing paths raise ImdsNotFoundError."""

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self.data: dict[str, str] = dict(data or {})
        self.reads: list[str] = []

    def get(self, path: str) -> str:
        self.reads.append(path)
        if path not in self.data:
            raise ImdsNotFoundError(path)
        return self.data[path]

    def set_eni(
        self,
        mac: str,
        *,
        eni_id: str,
        device_number: int,
        subnet_id: str,
        subnet_cidr: str,
        vpc_id: str,
        vpc_cidrs: Sequence[str] = (),
        ipv4s: Sequence[str] = (),
        ipv4_prefixes: Sequence[str] = (),
        security_groups: Sequence[str] = (),
        network_card: int = 0,
    ) -> None:
        base = f"network/interfaces/macs/{mac}/"
        for key in [k for k in self.data if k.startswith(base)]:
            del self.data[key]
        self.data.update(
            {
                base + "interface-id": eni_id,
                base + "device-number": str(device_number),
                base + "network-card": str(network_card),
                base + "subnet-id": subnet_id,
                base + "subnet-ipv4-cidr-block": subnet_cidr,
                base + "vpc-id": vpc_id,
                base + "vpc-ipv4-cidr-blocks": "\n".join(vpc_cidrs or [subnet_cidr]),
            }
        )
        if ipv4s:
            self.data[base + "local-ipv4s"] = "\n".join(ipv4s)
        if ipv4_prefixes:
            self.data[base + "ipv4-prefix"] = "\n".join(ipv4_prefixes)
        if security_groups:
            self.data[base + "security-group-ids"] = "\n".join(security_groups)
        macs = {m for m in self.data.get("network/interfaces/macs/", "").split() if m}
        macs.add(mac + "/")
        self.data["network/interfaces/macs/"] = "\n".join(sorted(macs))

    def sync_from(self, ec2: FakeEC2, instance_id: str) -> None:
        """Rebuild the map from the fake EC2's current state (a perfectly fresh IMDS)."""
        inst = ec2.instances[instance_id]
        self.data = {
            "instance-id": instance_id,
            "instance-type": inst["InstanceType"],
            "placement/region": ec2.region,
            "placement/availability-zone": ec2.availability_zone,
        }
        for eni in ec2.enis.values():
            att = eni.get("Attachment") or {}
            if att.get("InstanceId") != instance_id:
                continue
            subnet = ec2.subnets[eni["SubnetId"]]
            ips = [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"]]
            if att["DeviceIndex"] == 0 and att.get("NetworkCardIndex", 0) == 0:
                self.data["mac"] = eni["MacAddress"]
                self.data["local-ipv4"] = ips[0]
            self.set_eni(
                eni["MacAddress"],
                eni_id=eni["NetworkInterfaceId"],
                device_number=att["DeviceIndex"],
                network_card=att.get("NetworkCardIndex", 0),
                subnet_id=eni["SubnetId"],
                subnet_cidr=subnet["CidrBlock"],
                vpc_id=ec2.vpc_id,
                vpc_cidrs=[ec2.vpc_cidr],
                ipv4s=ips,
                ipv4_prefixes=[p["Ipv4Prefix"] for p in eni["Ipv4Prefixes"]],
                security_groups=[g["GroupId"] for g in eni["Groups"]],
            )
