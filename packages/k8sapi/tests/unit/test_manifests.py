"""Raw objects to the wrapper's values."""

from __future__ import annotations

import datetime
import ipaddress

from vpccni.k8sapi import CniNodeFeature, EventType
from vpccni.k8sapi.manifests import (
    cninode_from_manifest,
    cninode_manifest,
    eniconfig_from_manifest,
    event_manifest,
    node_from_manifest,
    pod_from_manifest,
)


def test_node_fields_ipamd_reads() -> None:
    node = node_from_manifest(
        {
            "metadata": {
                "name": "n1",
                "uid": "u",
                "labels": {"a": "b"},
                "annotations": {"c": "d"},
                "resourceVersion": "7",
            },
            "spec": {
                "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
                "providerID": "aws:///us-west-2a/i-1",
            },
            "status": {"capacity": {"pods": "29", "cpu": "2"}},
        }
    )
    assert node.max_pods == 29 and node.labels == {"a": "b"} and node.annotations == {"c": "d"}
    assert node.has_unschedulable_taint and not node.unschedulable
    assert node.provider_id == "aws:///us-west-2a/i-1" and node.resource_version == "7"
    bare = node_from_manifest({"metadata": {"name": "n2"}})
    assert bare.max_pods is None and not bare.has_unschedulable_taint


def test_pod_fields() -> None:
    pod = pod_from_manifest(
        {
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "uid": "u1",
                "annotations": {"vpc.amazonaws.com/pod-eni": "[]"},
            },
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "resources": {"limits": {"vpc.amazonaws.com/pod-eni": "1"}}}],
            },
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "2001:db8::5"}]},
        }
    )
    assert pod.key == ("ns", "p") and pod.uid == "u1" and pod.node_name == "n1"
    assert pod.pod_ips == (ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("2001:db8::5"))
    assert pod.requests_pod_eni and pod.annotations["vpc.amazonaws.com/pod-eni"] == "[]"
    assert pod_from_manifest({"metadata": {"name": "q"}, "status": {"podIP": "bogus"}}).pod_ips == ()


def test_eniconfig_and_cninode_round_trip() -> None:
    cfg = eniconfig_from_manifest(
        {"metadata": {"name": "az1"}, "spec": {"subnet": "subnet-1", "securityGroups": ["sg-1"]}}
    )
    assert (cfg.subnet, cfg.security_groups) == ("subnet-1", ("sg-1",))
    features = (
        CniNodeFeature(name="SecurityGroupsForPods"),
        CniNodeFeature(name="CustomNetworking", value="az1"),
    )
    raw = cninode_manifest("n1", features)
    assert raw["spec"]["features"] == [
        {"name": "SecurityGroupsForPods"},
        {"name": "CustomNetworking", "value": "az1"},
    ]
    assert cninode_from_manifest(raw).features == features


def test_event_is_about_the_aws_node_pod() -> None:
    event = event_manifest(
        pod_namespace="kube-system",
        pod_name="aws-node-x",
        pod_uid="u",
        node_name="n1",
        reason="MissingENIConfig",
        message="ENIConfig az1 not found",
        type=EventType.WARNING,
        now=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )
    assert event["involvedObject"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": "kube-system",
        "name": "aws-node-x",
        "uid": "u",
    }
    assert event["type"] == "Warning" and event["firstTimestamp"] == "2026-01-02T03:04:05Z"
    assert event["metadata"]["generateName"] == "aws-node-x."
