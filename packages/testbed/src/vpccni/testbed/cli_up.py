"""What `vpccni-testbed up` brings up, and the JSON it reports.

With the datapath (the default, root only): a `Cluster` (EC2, the VPC datapath, the Kubernetes API server)
with N nodes, each a network namespace with IMDS, EC2 and the API server inside, plus a loopback IMDS per node
so tools in the root namespace can read it too. Without it (`--no-datapath`, no root needed): EC2, the API
server and N instances with a loopback IMDS each; nothing to run a datapath in.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpccni.testbed.cloud import Cloud, CloudConfig, InstanceInfo
from vpccni.testbed.cluster import Cluster, ClusterConfig, Node
from vpccni.testbed.kube import KubeApiServer
from vpccni.testbed.kube.kubelet import register_kubelet_node

log = logging.getLogger(__name__)

KUBECONFIG_NAME = "kubeconfig"


class StartInterrupted(Exception):
    """A stop signal arrived while the testbed was still coming up."""


@dataclass(frozen=True, kw_only=True)
class UpOptions:
    instance_type: str = "m5.large"
    nodes: int = 1
    datapath: bool = True
    imds_port: int = 0  # the first node's loopback IMDS; 0 picks a free port


class TestbedUp:
    """One `up` run: `start()` brings everything up and returns the JSON-ready description; `stop()` tears
    down everything it made (namespaces, servers, its temporary directory) and is idempotent."""

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, *, cloud_config: CloudConfig, options: UpOptions) -> None:
        if options.nodes < 1:
            raise ValueError(f"--nodes must be at least 1, not {options.nodes}")
        self.cloud_config = cloud_config
        self.options = options
        self.workdir: Path | None = None
        self._cluster: Cluster | None = None
        self._cloud: Cloud | None = None
        self._kube: KubeApiServer | None = None

    def start(self, interrupted: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Bring the testbed up; `interrupted()` is asked between steps so a stop signal ends a long start
        early (StartInterrupted). On any failure, whatever was made is torn down before raising."""
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="vpccni-testbed-"))
            if self.options.datapath:
                return self._start_cluster(interrupted)
            return self._start_loopback(interrupted)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            if self._cluster is not None:
                self._cluster.stop()
            if self._kube is not None:
                self._kube.stop()
            if self._cloud is not None:
                self._cloud.stop()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
            self._cluster = self._cloud = self._kube = None

    # -- with the datapath ------------------------------------------------------------------------

    def _start_cluster(self, interrupted: Callable[[], bool]) -> dict[str, Any]:
        cluster = self._cluster = Cluster(ClusterConfig(cloud=self.cloud_config, kube=True))
        log.info(
            "starting EC2, the VPC datapath (namespaces vtb-%s-*) and the Kubernetes API", cluster.run_id
        )
        cluster.start()
        kube = cluster.kube
        if kube is None:  # ClusterConfig(kube=True) always has one; guard the contract anyway
            raise RuntimeError("the testbed cluster started without a Kubernetes API server")
        nodes: list[dict[str, Any]] = []
        for index in range(self.options.nodes):
            _check(interrupted)
            node = cluster.add_node(instance_type=self.options.instance_type)
            imds = cluster.cloud.start_imds(
                node.instance.instance_id, host=self.cloud_config.host, port=self._imds_port(index)
            )
            nodes.append(_node_json(node, imds_endpoint=imds.endpoint))
            log.info(
                "%s: %s (%s) in namespace %s, Kubernetes node %s",
                node.name,
                node.instance.instance_id,
                node.instance.primary_ip,
                node.netns,
                node.k8s_node_name,
            )
        assert self.workdir is not None
        return {
            **_cloud_json(cluster.cloud, cluster.nodes[0].instance, nodes[0]["imds_endpoint"]),
            "datapath": True,
            "run_id": cluster.run_id,
            "nodes": nodes,
            "kube_api_url": kube.url,
            "kubeconfig": str(kube.write_kubeconfig(self.workdir / KUBECONFIG_NAME)),
            "vpc_host_ip": str(cluster.vpc_host_ip),
            "internet_ip": str(cluster.internet_ip),
        }

    # -- without it -------------------------------------------------------------------------------

    def _start_loopback(self, interrupted: Callable[[], bool]) -> dict[str, Any]:
        cloud = self._cloud = Cloud(self.cloud_config)
        log.info("starting EC2 and the Kubernetes API on loopback (no datapath)")
        cloud.start()
        kube = self._kube = KubeApiServer(host=self.cloud_config.host).start()
        nodes: list[dict[str, Any]] = []
        instances: list[InstanceInfo] = []
        for index in range(self.options.nodes):
            _check(interrupted)
            inst = cloud.launch_instance(instance_type=self.options.instance_type)
            imds = cloud.start_imds(
                inst.instance_id, host=self.cloud_config.host, port=self._imds_port(index)
            )
            k8s_name = register_kubelet_node(kube, inst, cloud.region)
            env = {
                **cloud.client_env(),
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint,
                "CLUSTER_ENDPOINT": kube.url,
                "MY_NODE_NAME": k8s_name,
            }
            nodes.append(
                {
                    **_instance_json(inst),
                    "name": f"node{index + 1}",
                    "k8s_node_name": k8s_name,
                    "netns": None,
                    "netns_path": None,
                    "ec2_endpoint_in_ns": None,
                    "imds_endpoint_in_ns": None,
                    "kube_endpoint_in_ns": None,
                    "imds_endpoint": imds.endpoint,
                    "env": env,
                }
            )
            instances.append(inst)
            log.info(
                "node%d: %s (%s), Kubernetes node %s", index + 1, inst.instance_id, inst.primary_ip, k8s_name
            )
        assert self.workdir is not None
        return {
            **_cloud_json(cloud, instances[0], nodes[0]["imds_endpoint"]),
            "datapath": False,
            "run_id": None,
            "nodes": nodes,
            "kube_api_url": kube.url,
            "kubeconfig": str(kube.write_kubeconfig(self.workdir / KUBECONFIG_NAME)),
            "vpc_host_ip": None,
            "internet_ip": None,
        }

    def _imds_port(self, index: int) -> int:
        # A fixed port can serve one node only; the others pick free ports.
        return self.options.imds_port if index == 0 else 0


def _check(interrupted: Callable[[], bool]) -> None:
    if interrupted():
        raise StartInterrupted("stopped while the testbed was starting")


def _instance_json(inst: InstanceInfo) -> dict[str, Any]:
    return {
        "instance_id": inst.instance_id,
        "instance_type": inst.instance_type,
        "primary_eni_id": inst.primary_eni_id,
        "primary_mac": inst.primary_mac,
        "primary_ip": str(inst.primary_ip),
        "subnet_id": inst.subnet_id,
        "availability_zone": inst.availability_zone,
    }


def _node_json(node: Node, *, imds_endpoint: str) -> dict[str, Any]:
    return {
        **_instance_json(node.instance),
        "name": node.name,
        "k8s_node_name": node.k8s_node_name,
        "netns": node.netns,
        "netns_path": node.netns_path,
        "ec2_endpoint_in_ns": node.ec2_endpoint_in_ns,
        "imds_endpoint_in_ns": node.imds_endpoint_in_ns,
        "kube_endpoint_in_ns": node.kube_endpoint_in_ns,
        "imds_endpoint": imds_endpoint,
        "env": node.env(),
    }


def _cloud_json(cloud: Cloud, first: InstanceInfo, imds_endpoint: str) -> dict[str, Any]:
    """The keys `up` has always printed: the cloud's endpoints and network, and the first node's instance."""
    return {
        "ec2_endpoint": cloud.ec2_endpoint,
        "imds_endpoint": imds_endpoint,
        "control_endpoint": cloud.control_endpoint,
        "region": cloud.region,
        "vpc_id": cloud.vpc_id,
        "vpc_cidr": str(cloud.config.vpc_cidr),
        "subnet_ids": cloud.subnet_ids,
        "security_group_id": cloud.security_group_id,
        **_instance_json(first),
        "env": cloud.client_env(),
    }
