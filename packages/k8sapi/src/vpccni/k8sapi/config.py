"""Where the Kubernetes API server is and how to authenticate.

No environment is read here: ipamd's settings carry CLUSTER_ENDPOINT, KUBECONFIG and the in-cluster
KUBERNETES_SERVICE_HOST/PORT into a `KubeEndpoint`.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_PORT_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KubeEndpoint:
    """Where to find the API server (each field is the variable of the same upstream name)."""

    cluster_endpoint: str = ""  # CLUSTER_ENDPOINT: beats the in-cluster service address
    kubeconfig: str = ""  # KUBECONFIG: used outside a pod when there is no CLUSTER_ENDPOINT
    service_host: str = ""  # KUBERNETES_SERVICE_HOST, set by Kubernetes in every pod
    service_port: int = 443  # KUBERNETES_SERVICE_PORT


@dataclass(frozen=True, kw_only=True)
class KubeSettings:
    """What the wrapper needs besides the client configuration (values come from ipamd's settings)."""

    node_name: str  # MY_NODE_NAME
    pod_name: str = ""  # MY_POD_NAME: the aws-node pod Events are about; empty → no Events
    pod_namespace: str = "kube-system"
    user_agent: str = ""  # e.g. "amazon-vpc-cni-k8s/<VPC_CNI_VERSION>"
    request_timeout_s: float = 10.0
    watch_timeout_s: int = 300  # server-side timeout of one watch request; then re-watch from the last RV


def load_config(
    endpoint: KubeEndpoint | None = None,
    *,
    kubeconfig: str | os.PathLike[str] | None = None,
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
) -> client.Configuration:
    """Build the client configuration, in this order:

    1. ``kubeconfig`` given → that file;
    2. running in a pod (service-account token present) → in-cluster credentials, with the host taken from
       ``cluster_endpoint`` when set (upstream: avoids waiting for kube-proxy to program the service VIP);
    3. ``cluster_endpoint`` alone → that URL without credentials;
    4. ``endpoint.kubeconfig``.
    """
    where = endpoint or KubeEndpoint()
    cfg = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
        return cfg
    if Path(token_file).is_file():
        service = urllib.parse.urlsplit(where.cluster_endpoint) if where.cluster_endpoint else None
        environ = {
            SERVICE_HOST_ENV_NAME: (service.hostname or "") if service else where.service_host,
            SERVICE_PORT_ENV_NAME: str((service.port or 443) if service else where.service_port),
        }
        InClusterConfigLoader(token_filename=token_file, cert_filename=ca_file, environ=environ).load_and_set(
            cfg
        )
        if where.cluster_endpoint:
            cfg.host = where.cluster_endpoint.rstrip("/")
        return cfg
    if where.cluster_endpoint:
        cfg.host = where.cluster_endpoint.rstrip("/")
        return cfg
    if not where.kubeconfig or not Path(where.kubeconfig).is_file():
        raise FileNotFoundError(
            f"no Kubernetes API configuration: not in a pod (no {token_file}), CLUSTER_ENDPOINT unset, and "
            f"no kubeconfig{' at ' + where.kubeconfig if where.kubeconfig else ''}; set CLUSTER_ENDPOINT or "
            "KUBECONFIG"
        )
    config.load_kube_config(config_file=where.kubeconfig, client_configuration=cfg, persist_config=False)
    return cfg
