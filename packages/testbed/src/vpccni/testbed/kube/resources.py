"""The resource types the testbed API server serves: the built-in catalogue (one line per type), and the
``ResourceType`` that custom resource definitions turn into at run time (``crds.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.testbed.kube import printers, tables
from vpccni.testbed.kube.tables import Column


@dataclass(frozen=True, kw_only=True)
class ResourceType:
    """One REST resource: where it lives in the URL space, what its objects are called, how it prints."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    singular: str = ""  # default: kind in lower case
    categories: tuple[str, ...] = ()
    columns: tuple[Column, ...] = tables.DEFAULT_COLUMNS
    custom: bool = (
        False  # served from a CustomResourceDefinition: no strategic merge patch, as on a real server
    )

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``v1/pods`` or ``vpcresources.k8s.aws/v1alpha1/cninodes``."""
        return f"{self.api_version}/{self.plural}"


_CNINODE_FEATURES = tables.json_path_column(
    name="Features",
    json_path=".spec.features",
    description="The features delegated to VPC resource controller",
)

_SGP_GROUPS = tables.json_path_column(
    name="Security-Group-Ids",
    json_path=".spec.securityGroups.groupIds",
    description="The security group IDs to apply to the elastic network interface of pods that match this "
    "policy",
)


def builtin(
    api_version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool,
    short_names: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    columns: tuple[Column, ...] = tables.DEFAULT_COLUMNS,
    custom: bool = False,
) -> ResourceType:
    """One catalogue entry: ``builtin("apps/v1", "daemonsets", "DaemonSet", namespaced=True)``."""
    group, _, version = api_version.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=short_names,
        categories=categories,
        columns=columns,
        custom=custom,
    )


RBAC = "rbac.authorization.k8s.io/v1"
# fmt: off
NODES = builtin("v1", "nodes", "Node", namespaced=False, short_names=("no",), columns=printers.NODE_COLUMNS)
PODS = builtin("v1", "pods", "Pod", namespaced=True, short_names=("po",), categories=("all",), columns=printers.POD_COLUMNS)  # noqa: E501
NAMESPACES = builtin("v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",), columns=printers.NAMESPACE_COLUMNS)  # noqa: E501
EVENTS = builtin("v1", "events", "Event", namespaced=True, short_names=("ev",), columns=printers.EVENT_COLUMNS)  # noqa: E501
EVENTS_V1 = builtin("events.k8s.io/v1", "events", "Event", namespaced=True, short_names=("ev",), columns=printers.EVENT_COLUMNS)  # noqa: E501
CONFIGMAPS = builtin("v1", "configmaps", "ConfigMap", namespaced=True, short_names=("cm",), columns=printers.CONFIGMAP_COLUMNS)  # noqa: E501
SERVICEACCOUNTS = builtin("v1", "serviceaccounts", "ServiceAccount", namespaced=True, short_names=("sa",), columns=printers.SERVICEACCOUNT_COLUMNS)  # noqa: E501
DAEMONSETS = builtin("apps/v1", "daemonsets", "DaemonSet", namespaced=True, short_names=("ds",), categories=("all",), columns=printers.DAEMONSET_COLUMNS)  # noqa: E501
DEPLOYMENTS = builtin("apps/v1", "deployments", "Deployment", namespaced=True, short_names=("deploy",), categories=("all",), columns=printers.DEPLOYMENT_COLUMNS)  # noqa: E501
CLUSTERROLES = builtin(RBAC, "clusterroles", "ClusterRole", namespaced=False, columns=printers.ROLE_COLUMNS)
CLUSTERROLEBINDINGS = builtin(RBAC, "clusterrolebindings", "ClusterRoleBinding", namespaced=False, columns=printers.BINDING_COLUMNS)  # noqa: E501
ROLES = builtin(RBAC, "roles", "Role", namespaced=True, columns=printers.ROLE_COLUMNS)
ROLEBINDINGS = builtin(RBAC, "rolebindings", "RoleBinding", namespaced=True, columns=printers.BINDING_COLUMNS)
LEASES = builtin("coordination.k8s.io/v1", "leases", "Lease", namespaced=True)
CRDS = builtin("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False, short_names=("crd", "crds"))  # noqa: E501
# Custom resources an EKS cluster always has (their CRDs are also created at start, see bootstrap.py): served
# even by a bare ObjectStore, with the columns their CRDs define.
ENICONFIGS = builtin("crd.k8s.amazonaws.com/v1alpha1", "eniconfigs", "ENIConfig", namespaced=False, custom=True, columns=(tables.NAME, tables.AGE_DATE))  # noqa: E501
CNINODES = builtin("vpcresources.k8s.aws/v1alpha1", "cninodes", "CNINode", namespaced=False, short_names=("cnd",), custom=True, columns=(tables.NAME, _CNINODE_FEATURES))  # noqa: E501
# Network policy: the API's NetworkPolicy, and the PolicyEndpoint its controller writes (a CRD on a cluster).
NETWORKPOLICIES = builtin("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", namespaced=True, short_names=("netpol",))  # noqa: E501
POLICYENDPOINTS = builtin("networking.k8s.aws/v1alpha1", "policyendpoints", "PolicyEndpoint", namespaced=True, custom=True)  # noqa: E501
SECURITYGROUPPOLICIES = builtin("vpcresources.k8s.aws/v1beta1", "securitygrouppolicies", "SecurityGroupPolicy", namespaced=True, short_names=("sgp",), custom=True, columns=(tables.NAME, _SGP_GROUPS))  # noqa: E501
# fmt: on

# The built-in catalogue. Serving another type is one line here (plus, optionally, its table columns).
ALL_RESOURCES: tuple[ResourceType, ...] = (
    NODES,
    PODS,
    NAMESPACES,
    EVENTS,
    EVENTS_V1,
    CONFIGMAPS,
    SERVICEACCOUNTS,
    DAEMONSETS,
    DEPLOYMENTS,
    CLUSTERROLES,
    CLUSTERROLEBINDINGS,
    ROLES,
    ROLEBINDINGS,
    LEASES,
    CRDS,
    ENICONFIGS,
    CNINODES,
    NETWORKPOLICIES,
    POLICYENDPOINTS,
    SECURITYGROUPPOLICIES,
)

VERSION_INFO: dict[str, str] = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-vpccni-testbed",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}
