"""ENI tags and description: names here are a compatibility contract (docs/design/upstream-contract.md §5,
and eni-ownership.md for the ownership rule)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

TAG_INSTANCE_ID = "node.k8s.amazonaws.com/instance_id"
TAG_CREATED_AT = "node.k8s.amazonaws.com/createdAt"
TAG_NO_MANAGE = "node.k8s.amazonaws.com/no_manage"
TAG_CLUSTER_NAME = "cluster.k8s.amazonaws.com/name"
TAG_ENI_OWNER = "eks:eni:owner"
ENI_OWNER_VALUE = "amazon-vpc-cni"
# ADDITIONAL_ENI_TAGS keys containing this are dropped: they would spoof ownership tags.
RESERVED_TAG_SUBSTRING = "k8s.amazonaws.com"
ENI_DESCRIPTION_PREFIX = "aws-K8S-"


def eni_description(instance_id: str) -> str:
    return f"{ENI_DESCRIPTION_PREFIX}{instance_id}"


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def tags_dict(tag_list: object) -> dict[str, str]:
    """EC2's ``[{"Key": k, "Value": v}]`` (``Tags`` or ``TagSet``) as a dict."""
    if not isinstance(tag_list, list):
        return {}
    return {str(t["Key"]): str(t.get("Value", "")) for t in tag_list if isinstance(t, dict) and "Key" in t}


@dataclass(frozen=True, kw_only=True)
class TagSettings:
    cluster_name: str = ""
    additional_tags: Mapping[str, str] = field(default_factory=dict)

    def managed_tags(self, instance_id: str) -> dict[str, str]:
        """Tags every managed ENI must carry (enforced on existing ENIs; no createdAt)."""
        tags = {k: v for k, v in self.additional_tags.items() if RESERVED_TAG_SUBSTRING not in k}
        tags[TAG_INSTANCE_ID] = instance_id
        if self.cluster_name:
            tags[TAG_CLUSTER_NAME] = self.cluster_name
            tags[TAG_ENI_OWNER] = ENI_OWNER_VALUE
        return tags

    def creation_tags(self, instance_id: str, created_at: dt.datetime) -> dict[str, str]:
        """Tags for a new ENI's TagSpecifications."""
        tags = self.managed_tags(instance_id)
        tags[TAG_CREATED_AT] = rfc3339(created_at)
        return tags


def tags_to_set(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``desired`` that is missing from or different in ``current``."""
    return {k: v for k, v in desired.items() if current.get(k) != v}


def eni_is_managed(
    tags: Mapping[str, str], *, instance_id: str, is_primary: bool, manage_untagged: bool = True
) -> bool:
    """Upstream's ownership rule (ipamd's setUnmanagedENIs), for an ENI attached to this instance.

    - the primary ENI is always managed;
    - a ``no_manage`` tag decides alone: exactly ``true`` opts the ENI out, any other value keeps it managed;
    - an ENI tagged with this instance's id is managed;
    - any other ENI (untagged, or tagged by another instance it was attached to before) is managed only when
      ``MANAGE_UNTAGGED_ENI`` is true. Such an ENI is then re-tagged with this instance's id.
    """
    if is_primary:
        return True
    no_manage = tags.get(TAG_NO_MANAGE)
    if no_manage is not None:
        return no_manage != "true"
    if tags.get(TAG_INSTANCE_ID) == instance_id:
        return True
    return manage_untagged
