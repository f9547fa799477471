"""`Cluster`: the testbed's EC2 (`Cloud`) and its VPC datapath together, so nodes are namespaces a real daemon
runs in with only the upstream environment variables.

    cluster = Cluster(ClusterConfig()).start()
    node = cluster.add_node(instance_type="m5.large")
    subprocess.run(["ip", "netns", "exec", node.netns, ...], env=node.env())
    cluster.stop()

Inside each node namespace, as on EC2: IMDS answers at 169.254.169.254:80, and the testbed's API servers
(which listen on the root namespace's loopback) are reachable at 169.254.170.2:<same port> through forwarders.
That includes the Kubernetes API server (`cluster.kube`): every node is registered there as kubelet would
register it (capacity.pods = the instance type's max pods), and `node.env()` carries `CLUSTER_ENDPOINT` and
`MY_NODE_NAME` as the aws-node DaemonSet does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from vpccni.testbed.cloud import Cloud, CloudConfig, InstanceInfo
from vpccni.testbed.cloudwatch import ENDPOINT_ENV as CLOUDWATCH_ENDPOINT_ENV
from vpccni.testbed.datapath import IMDS_IP, Datapath, DatapathConfig, NodeNetwork
from vpccni.testbed.datapath import namespaces as ns
from vpccni.testbed.datapath.cloudview import Ec2CloudView
from vpccni.testbed.kube import CNINODES, NODES, PODS, SECURITYGROUPPOLICIES, KubeApiServer, NotFoundError
from vpccni.testbed.kube.kubelet import register_aws_node_pod, register_kubelet_node, schedule_pod
from vpccni.testbed.kube.proxy import default_dialer
from vpccni.testbed.vpcrc import ControllerConfig, PodEniWebhook, VpcResourceController

log = logging.getLogger(__name__)

IMDS_PORT = 80


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    cloud: CloudConfig = field(default_factory=CloudConfig)
    # Its layout's vpc_cidr is replaced by the cloud's, so the router and EC2 agree on the VPC.
    datapath: DatapathConfig = field(default_factory=DatapathConfig)
    kube: bool = True  # serve a Kubernetes API server and register every node in it
    # Run the VPC resource controller stand-in (security groups for pods: trunk and branch ENIs, the pod
    # webhook) against the API server and EC2; needs `kube`.
    vpc_resource_controller: ControllerConfig | None = None


@dataclass(frozen=True, kw_only=True)
class Node:
    """One testbed instance and the namespace that is its host."""

    name: str
    instance: InstanceInfo
    netns: str
    netns_path: str
    ec2_endpoint_in_ns: str
    imds_endpoint_in_ns: str
    network: NodeNetwork
    client_env: Mapping[str, str]
    kube_endpoint_in_ns: str = ""  # "" when the cluster has no Kubernetes API server
    k8s_node_name: str = ""  # the Node object's name (kubelet's hostname-override on EKS)

    def env(self) -> dict[str, str]:
        """Environment for a process started inside the namespace: the upstream variables only."""
        env = {
            **self.client_env,
            "AWS_EC2_ENDPOINT": self.ec2_endpoint_in_ns,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds_endpoint_in_ns,
        }
        env.pop(CLOUDWATCH_ENDPOINT_ENV, None)  # served on the root namespace's loopback only
        if self.kube_endpoint_in_ns:
            env["CLUSTER_ENDPOINT"] = self.kube_endpoint_in_ns
            env["MY_NODE_NAME"] = self.k8s_node_name
        return env


class Cluster:
    """Owns the cloud, the datapath and every node; `stop()` removes every namespace and link it made."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.cloud = Cloud(self.config.cloud)
        layout = dataclasses.replace(
            self.config.datapath.layout,
            vpc_cidr=self.config.cloud.vpc_cidr,
            vpc_ipv6_cidr=self.config.cloud.vpc_ipv6_cidr,
        )
        _check_vpc_host(layout.vpc_host.network, vpc=self.config.cloud.vpc_cidr, config=self.config.cloud)
        if layout.vpc_host6 is not None and any(
            cidr is not None and cidr.overlaps(layout.vpc_host6.network)
            for cidr in self.config.cloud.subnet_ipv6_cidrs()
        ):
            raise ValueError(f"a subnet's IPv6 CIDR takes the VPC host's /64 {layout.vpc_host6.network}")
        self.datapath = Datapath(
            cloud=Ec2CloudView(self.cloud),
            config=dataclasses.replace(self.config.datapath, layout=layout),
        )
        if self.config.vpc_resource_controller is not None and not self.config.kube:
            raise ValueError("the VPC resource controller needs the API server: ClusterConfig(kube=True)")
        self.kube: KubeApiServer | None = KubeApiServer() if self.config.kube else None
        if self.kube is not None:
            self.kube.pod_dialer = self._dial_pod
        self.vpcrc: VpcResourceController | None = None  # started with the cluster when configured
        self.nodes: list[Node] = []
        self._imds: dict[str, Any] = {}  # instance id -> its IMDS server (serving inside the node namespace)
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.datapath.config.run_id

    @property
    def vpc_host_ip(self) -> ipaddress.IPv4Address:
        return self.datapath.vpc_host_ip

    @property
    def internet_ip(self) -> ipaddress.IPv4Address:
        return self.datapath.internet_ip

    @property
    def vpc_host_ip6(self) -> ipaddress.IPv6Address | None:
        """In a dual-stack VPC (`CloudConfig(vpc_ipv6_cidr=...)`), the VPC host's IPv6 address."""
        return self.datapath.vpc_host_ip6

    @property
    def internet_ip6(self) -> ipaddress.IPv6Address | None:
        return self.datapath.internet_ip6

    def start(self) -> Cluster:
        self.cloud.start()
        try:
            self.datapath.start()
            if self.kube is not None:
                self.kube.start()
                self._start_vpcrc(self.kube)
        except BaseException:
            if self.kube is not None:
                self.kube.stop()
            self.datapath.stop()
            self.cloud.stop()
            raise
        return self

    def _start_vpcrc(self, kube: KubeApiServer) -> None:
        if self.config.vpc_resource_controller is None:
            return
        kube.admission.append(PodEniWebhook(kube.store))
        self.vpcrc = VpcResourceController(
            kube_url=kube.url, ec2=self.cloud.ec2_client(), config=self.config.vpc_resource_controller
        ).start()

    def add_node(self, *, instance_type: str = "m5.large", subnet_id: str | None = None) -> Node:
        """Launch an instance and give it a namespace with eth0, IMDS and the EC2 endpoint inside."""
        with self._lock:
            name = f"node{len(self.nodes) + 1}"
            instance = self.cloud.launch_instance(instance_type=instance_type, subnet_id=subnet_id)
            network = self.datapath.add_node(instance_id=instance.instance_id, name=name)
            self._imds[instance.instance_id] = self.cloud.start_imds(
                instance.instance_id, sock=network.listen(IMDS_IP, IMDS_PORT)
            )
            ec2 = urlsplit(self.cloud.ec2_endpoint)
            if ec2.hostname is None or ec2.port is None:
                raise RuntimeError(
                    f"cannot forward to the EC2 endpoint {self.cloud.ec2_endpoint}: no host:port"
                )
            node = Node(
                name=name,
                instance=instance,
                netns=network.netns,
                netns_path=network.path,
                ec2_endpoint_in_ns=network.forward(port=ec2.port, target=(ec2.hostname, ec2.port)),
                imds_endpoint_in_ns=f"http://{IMDS_IP}",
                network=network,
                client_env=self.cloud.client_env(),
                **self._register_in_kube(instance, network),
            )
            self.nodes.append(node)
            log.info("node %s: %s in %s", name, instance.instance_id, network.netns)
            return node

    def _register_in_kube(self, instance: InstanceInfo, network: NodeNetwork) -> dict[str, str]:
        """Register the Node object as kubelet would; the API server's address inside the namespace."""
        if self.kube is None:
            return {}
        api = urlsplit(self.kube.url)
        if api.hostname is None or api.port is None:
            raise RuntimeError(f"cannot forward to the Kubernetes API server {self.kube.url}: no host:port")
        node_name = register_kubelet_node(self.kube, instance, self.cloud.region)
        return {
            "kube_endpoint_in_ns": network.forward(port=api.port, target=(api.hostname, api.port)),
            "k8s_node_name": node_name,
        }

    def create_pod(
        self,
        node: Node,
        *,
        namespace: str,
        name: str,
        labels: Mapping[str, str] | None = None,
        service_account: str = "default",
    ) -> dict[str, Any]:
        """The Pod object of a pod scheduled to ``node`` (through admission: the VPC resource controller's
        webhook applies), before kubelet asks the CNI for its network; returns the stored object."""
        if self.kube is None:
            raise RuntimeError("this cluster has no Kubernetes API server (ClusterConfig(kube=False))")
        return schedule_pod(
            self.kube,
            node_name=node.k8s_node_name,
            namespace=namespace,
            name=name,
            labels=labels,
            service_account=service_account,
        )

    def create_security_group_policy(
        self, name: str, *, labels: Mapping[str, str], group_ids: list[str], namespace: str = "default"
    ) -> None:
        """A SecurityGroupPolicy giving the pods of ``namespace`` labelled ``labels`` branch ENIs in
        ``group_ids`` (the VPC resource controller's webhook and controller act on it)."""
        if self.kube is None:
            raise RuntimeError("this cluster has no Kubernetes API server (ClusterConfig(kube=False))")
        self.kube.store.create(
            SECURITYGROUPPOLICIES,
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "podSelector": {"matchLabels": dict(labels)},
                    "securityGroups": {"groupIds": group_ids},
                },
            },
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        """Remove a Pod object (kubelet's last step once the CNI's DEL is done)."""
        if self.kube is not None:
            self.kube.store.delete(PODS, name, namespace)

    def register_aws_node(self, node: Node) -> str:
        """Report the aws-node pod on ``node`` (running the agent there is the caller's: ``NodeRunner``), so
        cluster-wide tools find it by its label; returns the pod's name."""
        if self.kube is None:
            raise RuntimeError("this cluster has no Kubernetes API server (ClusterConfig(kube=False))")
        return register_aws_node_pod(
            self.kube, node_name=node.k8s_node_name, host_ip=str(node.instance.primary_ip)
        )

    def _dial_pod(self, pod: Mapping[str, Any], ip: str, port: int) -> socket.socket:
        """The API server's pod proxy reaches a pod from inside the namespace of the node it runs on."""
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = next((n for n in self.nodes if n.k8s_node_name == node_name), None)
        if node is None:
            return default_dialer(pod, ip, port)
        return ns.in_netns(node.netns, lambda: socket.create_connection((ip, port), timeout=10))

    def remove_node(self, node: Node, *, terminate: bool = True) -> None:
        """Delete the node's namespace (its ENIs leave the VPC router); by default terminate the instance."""
        with self._lock:
            imds = self._imds.pop(node.instance.instance_id, None)
            if imds is not None:
                imds.stop()
            self.datapath.remove_node(node.instance.instance_id)
            if self.kube is not None and node.k8s_node_name:
                self.kube.store.delete(NODES, node.k8s_node_name)
                with contextlib.suppress(NotFoundError):  # garbage-collected with its Node on EKS
                    self.kube.store.delete(CNINODES, node.k8s_node_name)
                pods, _ = self.kube.store.list(PODS, field_selector=f"spec.nodeName={node.k8s_node_name}")
                for pod in pods:
                    self.kube.store.delete(PODS, pod["metadata"]["name"], pod["metadata"]["namespace"])
            if terminate:
                self.cloud.ec2_client().terminate_instances(InstanceIds=[node.instance.instance_id])
            self.nodes.remove(node)

    def stop(self) -> None:
        """Delete every namespace (nodes, VPC, internet, VPC host), then stop EC2 and IMDS. Idempotent."""
        try:
            if self.vpcrc is not None:
                self.vpcrc.stop()
                self.vpcrc = None
            if self.kube is not None:
                self.kube.stop()
            self.datapath.stop()
        finally:
            self.cloud.stop()
            self.nodes.clear()
            self._imds.clear()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_vpc_host(
    network: ipaddress.IPv4Network, *, vpc: ipaddress.IPv4Network, config: CloudConfig
) -> None:
    """The VPC host sits in its own subnet of the VPC, apart from every subnet EC2 hands addresses out of."""
    if not network.subnet_of(vpc):
        raise ValueError(f"the VPC host network {network} is outside the VPC {vpc}: pick one inside it")
    for spec in config.subnets:
        if spec.cidr.overlaps(network):
            raise ValueError(
                f"the VPC host network {network} overlaps the EC2 subnet {spec.cidr}: "
                "set DatapathConfig(layout=VpcLayout(vpc_host=...)) to a free part of the VPC"
            )
