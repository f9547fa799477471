"""Which ENIConfig applies to a node, in upstream's order (docs/design/upstream-contract.md §6)."""

from __future__ import annotations

from vpccni.k8sapi.model import NodeInfo
from vpccni.k8sapi.names import (
    DEFAULT_ENICONFIG_ANNOTATION,
    DEFAULT_ENICONFIG_LABEL,
    DEFAULT_ENICONFIG_NAME,
    EXTERNAL_ENICONFIG_LABEL,
)


def eniconfig_name_for(
    node: NodeInfo,
    *,
    annotation_key: str = DEFAULT_ENICONFIG_ANNOTATION,
    label_key: str = DEFAULT_ENICONFIG_LABEL,
) -> str:
    """Label ``vpc.amazonaws.com/externalEniConfig`` → annotation ``ENI_CONFIG_ANNOTATION_DEF`` → label
    ``ENI_CONFIG_LABEL_DEF`` → ``default``. The keys come from ipamd's settings. As upstream, a key that is
    present wins even with an empty value (the lookup of that name then fails with a clear error)."""
    for source, key in (
        (node.labels, EXTERNAL_ENICONFIG_LABEL),
        (node.annotations, annotation_key),
        (node.labels, label_key),
    ):
        if key in source:
            return source[key]
    return DEFAULT_ENICONFIG_NAME
