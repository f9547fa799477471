"""Which attached ENIs ipamd manages, and the tags a managed ENI carries: one rule for node init and the
reconciler (docs/design/eni-ownership.md).

The tag rule is upstream's, in `vpccni.awsutils.tags.eni_is_managed` (where the tag names are declared). On
top of it, ipamd leaves alone what it cannot serve: ENIs on network cards it does not manage (cards above 0
without ENABLE_MULTI_NIC), EFA-only ENIs (no IPv4 address to give pods), and in IPv6 mode every ENI but the
primary and the trunk (upstream's IPv6 mode serves pods from the primary ENI's /80 alone, and branch-ENI pods
through the trunk).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from vpccni.awsutils.tags import TagSettings, eni_is_managed, tags_to_set
from vpccni.ipamd.ports import CloudError, CloudPort, EniDescription

log = logging.getLogger(__name__)

EFA_ONLY = "efa-only"


@dataclass(frozen=True, kw_only=True)
class EniOwnership:
    instance_id: str
    primary_eni_id: str = ""
    manage_untagged: bool = True  # MANAGE_UNTAGGED_ENI
    tags: TagSettings = field(default_factory=TagSettings)  # CLUSTER_NAME, ADDITIONAL_ENI_TAGS
    network_cards: frozenset[int] = frozenset({0})  # ENABLE_MULTI_NIC: every card (`cards.candidate_cards`)
    primary_only: bool = False  # ENABLE_IPv6: the primary ENI (and the trunk, ENABLE_POD_ENI's) only

    def manages(self, eni: EniDescription) -> bool:
        if self.primary_only and eni.eni_id != self.primary_eni_id and not eni.is_trunk:
            return False
        if eni.network_card not in self.network_cards or eni.interface_type == EFA_ONLY:
            return False
        return eni_is_managed(
            eni.tag_map,
            instance_id=self.instance_id,
            is_primary=eni.eni_id == self.primary_eni_id,
            manage_untagged=self.manage_untagged,
        )

    def missing_tags(self, eni: EniDescription) -> dict[str, str]:
        """The ownership tags (and ADDITIONAL_ENI_TAGS) a managed ENI lacks or has with another value.

        Nothing for the trunk: the VPC resource controller owns its tags (upstream does not tag it either)."""
        if eni.is_trunk:
            return {}
        return tags_to_set(eni.tag_map, self.tags.managed_tags(self.instance_id))

    def tag(self, cloud: CloudPort, eni: EniDescription) -> None:
        """Add the missing tags; a failure is logged, not fatal (the ENI still serves pods; only the
        leaked-ENI sweep of another node could miss it)."""
        missing = self.missing_tags(eni)
        if not missing:
            return
        try:
            cloud.tag_eni(eni.eni_id, missing)
        except CloudError as err:
            log.warning("tagging %s failed (%s); it still serves pods", eni.eni_id, err)
