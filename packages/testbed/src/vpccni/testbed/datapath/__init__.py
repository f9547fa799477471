"""The testbed's VPC datapath in network namespaces: instance namespaces, the VPC router behind their ENIs
(routes, gateways, source/destination check), an internet host and a VPC host."""

from .datapath import CloudView, Datapath, DatapathConfig, node_ifname
from .node import IMDS_IP, SERVICES_IP, NodeNetwork
from .vpc import EniPort, VpcLayout, VpcRouter

__all__ = [
    "IMDS_IP",
    "SERVICES_IP",
    "CloudView",
    "Datapath",
    "DatapathConfig",
    "EniPort",
    "NodeNetwork",
    "VpcLayout",
    "VpcRouter",
    "node_ifname",
]
