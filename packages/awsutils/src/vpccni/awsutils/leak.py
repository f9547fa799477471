"""Leaked-ENI sweep (upstream-contract.md §5): delete this CNI's ENIs left ``available`` in the VPC.

ENIs leak when an instance dies between detach and delete (upstream #69, #608). Candidates are filtered by
tag, status, VPC (and cluster), then by the ``aws-K8S-`` description; an ENI younger than five minutes, or
with no ``createdAt`` tag yet (which is added now), is left alone: another node may be attaching it.
``run_own`` deletes this instance's own unattached ENIs, at any age, at ipamd's start.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from dataclasses import dataclass

from vpccni.awsutils.clock import Clock, SystemClock
from vpccni.awsutils.ec2api import EC2Api
from vpccni.awsutils.eni import EniManager, eni_from_ec2
from vpccni.awsutils.errors import AwsUtilsError
from vpccni.awsutils.models import Ec2Eni
from vpccni.awsutils.tags import (
    ENI_DESCRIPTION_PREFIX,
    TAG_CLUSTER_NAME,
    TAG_CREATED_AT,
    TAG_INSTANCE_ID,
    parse_rfc3339,
    rfc3339,
)

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 3600.0
SWEEP_MAX_JITTER_S = 300.0  # each later sweep comes this much earlier or later than the interval
MIN_LEAK_AGE = dt.timedelta(minutes=5)


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    deleted: tuple[str, ...]
    tagged: tuple[str, ...]  # createdAt added; deleted on a later run
    skipped_young: tuple[str, ...]
    failed: tuple[str, ...]


class LeakSweeper:
    """``run_once()`` does one sweep; ``start()`` runs it about hourly.

    The first sweep comes at a random time within the first interval, not within upstream's first five
    minutes: a fleet that scales out together would otherwise sweep together, every node paging through
    the VPC's available ENIs within minutes of the others (5,000 nodes: 17 calls/s against a
    DescribeNetworkInterfaces bucket that refills 20/s). Spread over the hour it is 1.4/s. Later sweeps
    follow every interval, give or take ``max_jitter_s``.
    """

    def __init__(
        self,
        ec2: EC2Api,
        enis: EniManager,
        *,
        vpc_id: str,
        cluster_name: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
        interval_s: float = SWEEP_INTERVAL_S,
        max_jitter_s: float = SWEEP_MAX_JITTER_S,
        first_delay_max_s: float | None = None,  # None: the interval (upstream: 300 s)
    ) -> None:
        self._ec2 = ec2
        self._enis = enis
        self.vpc_id = vpc_id
        self.cluster_name = cluster_name
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.interval_s = interval_s
        self.max_jitter_s = max_jitter_s
        self.first_delay_max_s = interval_s if first_delay_max_s is None else first_delay_max_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def filters(self) -> list[dict[str, object]]:
        found: list[dict[str, object]] = [
            {"Name": "tag-key", "Values": [TAG_INSTANCE_ID]},
            {"Name": "status", "Values": ["available"]},
            {"Name": "vpc-id", "Values": [self.vpc_id]},
        ]
        if self.cluster_name:
            found.append({"Name": f"tag:{TAG_CLUSTER_NAME}", "Values": [self.cluster_name]})
        return found

    def _candidates(self, filters: list[dict[str, object]]) -> list[Ec2Eni]:
        """This CNI's ENIs (by description) that EC2 lists as `available` under `filters`."""
        found = (eni_from_ec2(raw) for raw in self._ec2.describe_network_interfaces(filters=filters))
        return [
            e for e in found if e.description.startswith(ENI_DESCRIPTION_PREFIX) and e.status == "available"
        ]

    def run_own(self) -> SweepResult:
        """This instance's own ENIs left `available`, whatever their age: an ipamd killed between
        CreateNetworkInterface and AttachNetworkInterface leaves one. Run at start, before ipamd creates any
        ENI, none of them can be one it is about to attach (only this instance's ipamd tags ENIs with its
        instance id), so the five-minute guard of the sweep is not needed."""
        deleted: list[str] = []
        failed: list[str] = []
        own: list[dict[str, object]] = [
            {"Name": f"tag:{TAG_INSTANCE_ID}", "Values": [self._enis.instance_id]},
            {"Name": "status", "Values": ["available"]},
            {"Name": "vpc-id", "Values": [self.vpc_id]},
        ]
        for eni in self._candidates(own):
            try:
                log.info("deleting ENI %s: created by this node's ipamd and never attached", eni.eni_id)
                self._enis.delete_eni(eni.eni_id)
                deleted.append(eni.eni_id)
            except AwsUtilsError as exc:  # attached meanwhile (a late attach), or no permission: sweep's job
                log.warning("unattached ENI %s of this node: %s", eni.eni_id, exc)
                failed.append(eni.eni_id)
        return SweepResult(deleted=tuple(deleted), tagged=(), skipped_young=(), failed=tuple(failed))

    def run_once(self) -> SweepResult:
        deleted: list[str] = []
        tagged: list[str] = []
        young: list[str] = []
        failed: list[str] = []
        now = self._clock.now()
        for eni in self._candidates(self.filters()):
            created = parse_rfc3339(eni.tags.get(TAG_CREATED_AT, ""))
            try:
                if created is None:
                    self._enis.create_tags(eni.eni_id, {TAG_CREATED_AT: rfc3339(now)})
                    tagged.append(eni.eni_id)
                    continue
                if now - created < MIN_LEAK_AGE:
                    young.append(eni.eni_id)
                    continue
                log.info("deleting leaked ENI %s (created %s)", eni.eni_id, rfc3339(created))
                self._enis.delete_eni(eni.eni_id)
                deleted.append(eni.eni_id)
            except AwsUtilsError as exc:
                log.warning("leaked ENI %s: %s", eni.eni_id, exc)
                failed.append(eni.eni_id)
        return SweepResult(
            deleted=tuple(deleted), tagged=tuple(tagged), skipped_young=tuple(young), failed=tuple(failed)
        )

    def first_delay(self) -> float:
        """Seconds from start to the first sweep."""
        return self._rng.uniform(0, self.first_delay_max_s)

    def next_delay(self) -> float:
        """Seconds from one sweep to the next."""
        return max(0.0, self.interval_s + self._rng.uniform(-self.max_jitter_s, self.max_jitter_s))

    def _loop(self) -> None:
        delay = self.first_delay()
        while not self._wait(delay):
            try:
                result = self.run_once()
                log.info("leak sweep: deleted %d, tagged %d", len(result.deleted), len(result.tagged))
            except Exception as exc:
                log.warning(
                    "leak sweep failed (%s); the next one comes in about %.0f s", exc, self.interval_s
                )
            delay = self.next_delay()

    def _wait(self, seconds: float) -> bool:
        return self._clock.wait(self._stop, seconds)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="vpccni-leak-sweep", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
