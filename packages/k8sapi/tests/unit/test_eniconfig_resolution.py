"""ENIConfig name resolution in upstream's order."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from vpccni.k8sapi import NodeInfo, eniconfig_name_for

EXTERNAL = "vpc.amazonaws.com/externalEniConfig"
DEFAULT_KEY = "k8s.amazonaws.com/eniConfig"
ZONE = "topology.kubernetes.io/zone"


def node(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> NodeInfo:
    return NodeInfo(
        name="n1", labels=MappingProxyType(labels or {}), annotations=MappingProxyType(annotations or {})
    )


@pytest.mark.parametrize(
    ("labels", "annotations", "expected"),
    [
        ({EXTERNAL: "ext", DEFAULT_KEY: "lab"}, {DEFAULT_KEY: "ann"}, "ext"),
        ({DEFAULT_KEY: "lab"}, {DEFAULT_KEY: "ann"}, "ann"),
        ({DEFAULT_KEY: "lab"}, {}, "lab"),
        ({}, {}, "default"),
        ({"unrelated": "x"}, {"other": "y"}, "default"),
    ],
)
def test_resolution_order(labels: dict[str, str], annotations: dict[str, str], expected: str) -> None:
    assert eniconfig_name_for(node(labels, annotations)) == expected


def test_custom_label_key_such_as_the_zone() -> None:
    n = node({ZONE: "us-west-2a", DEFAULT_KEY: "ignored"})
    assert eniconfig_name_for(n, label_key=ZONE) == "us-west-2a"
    assert eniconfig_name_for(n, annotation_key="my/ann", label_key="my/label") == "default"
    assert eniconfig_name_for(node(annotations={"my/ann": "a1"}), annotation_key="my/ann") == "a1"
