"""Making sure this node's CNINode advertises the features ipamd needs (how it signals the VPC Resource
Controller, docs/design/upstream-contract.md §2)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from vpccni.k8sapi.errors import Conflict, Forbidden, NotFound
from vpccni.k8sapi.model import CniNode, CniNodeFeature
from vpccni.k8sapi.protocol import KubeApi

log = logging.getLogger(__name__)


def merged_features(
    current: Sequence[CniNodeFeature], wanted: Sequence[CniNodeFeature]
) -> tuple[CniNodeFeature, ...]:
    """``current`` with each wanted feature added, or its value replaced when the name is already there."""
    by_name = {f.name: f for f in wanted}
    result = [by_name.pop(f.name, f) for f in current]
    result.extend(f for f in wanted if f.name in by_name)
    return tuple(result)


def ensure_cninode_features(api: KubeApi, wanted: Sequence[CniNodeFeature], *, attempts: int = 5) -> CniNode:
    """Get or create ``CNINode/<node>`` and merge-patch ``spec.features`` with an optimistic lock, re-reading
    on a conflict. Raises ``Conflict`` after ``attempts`` lost races, ``ApiUnavailable`` when unreachable."""
    for _ in range(attempts):
        try:
            node = api.get_cninode()
        except NotFound:
            try:
                return api.create_cninode(wanted)
            except Conflict:
                continue  # someone (the resource controller) created it meanwhile: merge into theirs
            except Forbidden as err:
                # Upstream's RBAC (and ours) only lets aws-node patch CNINodes: the controller makes them.
                raise Forbidden(
                    f"this node has no CNINode yet and aws-node may not create one ({err}): the VPC "
                    "resource controller creates a CNINode per node (on EKS it runs in the control plane); "
                    "check that it runs, or grant aws-node `create` on cninodes.vpcresources.k8s.aws"
                ) from err
        features = merged_features(node.features, wanted)
        if features == node.features:
            return node
        try:
            return api.patch_cninode_features(features, resource_version=node.resource_version)
        except Conflict:
            log.info("CNINode %s changed while patching its features; retrying", node.name)
    raise Conflict(f"CNINode kept changing while adding features {[f.name for f in wanted]}; retry later")
