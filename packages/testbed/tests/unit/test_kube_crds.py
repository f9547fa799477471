"""CustomResourceDefinitions make the testbed API server serve their custom resources, as a real one does."""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from vpccni.testbed.kube import CNINODES, CRDS, ENICONFIGS, SECURITYGROUPPOLICIES, KubeApiServer, ObjectStore
from vpccni.testbed.kube.bootstrap import CNINODE_CRD, ENICONFIG_CRD, SECURITYGROUPPOLICY_CRD
from vpccni.testbed.kube.crds import resource_types
from vpccni.testbed.kube.store import InvalidError

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color", "priority": 1},
                ],
            }
        ],
    },
}


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer() as srv:
        yield srv


@pytest.fixture
def api(server: KubeApiServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / "kc")))
    try:
        yield api_client
    finally:
        api_client.close()


def test_a_crd_serves_its_resources_until_it_is_deleted(server: KubeApiServer, api: client.ApiClient) -> None:
    client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGET_CRD)
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert "example.com" in groups
    custom = client.CustomObjectsApi(api)
    args = ("example.com", "v1", "default", "widgets")
    custom.create_namespaced_custom_object(
        *args, {"metadata": {"name": "w1"}, "spec": {"size": 3, "color": "red"}}
    )
    assert custom.get_namespaced_custom_object(*args, "w1")["kind"] == "Widget"

    request = urllib.request.Request(
        f"{server.url}/apis/example.com/v1/namespaces/default/widgets",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    with urllib.request.urlopen(request) as resp:
        table = json.load(resp)
    assert [(c["name"], c["type"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", 0),
        ("Size", "integer", 0),
        ("Color", "string", 1),
    ]
    assert table["rows"][0]["cells"] == ["w1", 3, "red"]

    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition("widgets.example.com")
    assert {c.type for c in crd.status.conditions} == {"NamesAccepted", "Established"}
    client.ApiextensionsV1Api(api).delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as info:
        custom.get_namespaced_custom_object(*args, "w1")
    assert info.value.status == 404
    assert "example.com" not in {g.name for g in client.ApisApi(api).get_api_versions().groups}


def test_deleting_a_crd_deletes_its_objects_with_events() -> None:
    store = ObjectStore()
    store.create(CRDS, WIDGET_CRD)
    store.create("example.com/v1/widgets", {"metadata": {"name": "w1", "namespace": "ns"}})
    before = store.resource_version
    store.delete(CRDS, "widgets.example.com")
    events = store.events_after(before, timeout=0, wake=lambda: False)
    assert [(e.type, e.obj["metadata"]["name"]) for e in events] == [
        ("DELETED", "widgets.example.com"),
        ("DELETED", "w1"),
    ]
    with pytest.raises(KeyError):
        store.registry.named("example.com/v1/widgets")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda crd: crd["metadata"].update(name="wrong"), 'must be spec.names.plural+"."+spec.group'),
        (lambda crd: crd["spec"].update(scope="Global"), "must be Namespaced or Cluster"),
        (lambda crd: crd["spec"]["versions"][0].update(storage=False), "exactly one must be storage"),
        (
            lambda crd: crd["spec"]["versions"][0]["additionalPrinterColumns"][0].update(jsonPath="spec"),
            "unsupported jsonPath",
        ),
    ],
)
def test_an_invalid_crd_is_rejected_with_the_field(change: Callable[[dict], None], message: str) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    change(crd)
    with pytest.raises(InvalidError, match=message.replace("+", r"\+").replace("(", r"\(")):
        ObjectStore().create(CRDS, crd)


def test_the_bootstrap_crds_define_what_the_builtin_custom_types_are() -> None:
    for crd, builtin in (
        (CNINODE_CRD, CNINODES),
        (ENICONFIG_CRD, ENICONFIGS),
        (SECURITYGROUPPOLICY_CRD, SECURITYGROUPPOLICIES),
    ):
        (served,) = resource_types(crd)
        assert (served.key, served.namespaced, served.short_names, served.custom) == (
            builtin.key,
            builtin.namespaced,
            builtin.short_names,
            builtin.custom,
        )
        assert [c.definition() for c in served.columns] == [c.definition() for c in builtin.columns]


def test_the_server_starts_with_what_an_eks_cluster_has(server: KubeApiServer) -> None:
    names = {n["metadata"]["name"] for n in server.store.list("namespaces")[0]}
    assert names == {"default", "kube-system", "kube-public", "kube-node-lease"}
    crds = {c["metadata"]["name"] for c in server.store.list(CRDS)[0]}
    assert crds == {
        "cninodes.vpcresources.k8s.aws",
        "eniconfigs.crd.k8s.amazonaws.com",
        "securitygrouppolicies.vpcresources.k8s.aws",
    }
