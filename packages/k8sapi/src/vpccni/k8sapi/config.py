"""Where the Kubernetes API server is and how to authenticate: the one place that reads the environment."""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Mapping
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

CLUSTER_ENDPOINT_ENV = "CLUSTER_ENDPOINT"
KUBECONFIG_ENV = "KUBECONFIG"


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
    *,
    env: Mapping[str, str] | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
) -> client.Configuration:
    """Build the client configuration, in this order:

    1. ``kubeconfig`` given → that file;
    2. running in a pod (service-account token present) → in-cluster credentials, with the host taken from
       ``CLUSTER_ENDPOINT`` when set (upstream: avoids waiting for kube-proxy to program the service VIP);
    3. ``CLUSTER_ENDPOINT`` alone → that URL without credentials;
    4. ``KUBECONFIG`` or ``~/.kube/config``.
    """
    environ = dict(os.environ if env is None else env)
    endpoint = environ.get(CLUSTER_ENDPOINT_ENV, "")
    cfg = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
        return cfg
    if Path(token_file).is_file():
        if endpoint:
            parsed = urllib.parse.urlsplit(endpoint)
            environ.setdefault(SERVICE_HOST_ENV_NAME, parsed.hostname or "")
            environ.setdefault(SERVICE_PORT_ENV_NAME, str(parsed.port or 443))
        InClusterConfigLoader(token_filename=token_file, cert_filename=ca_file, environ=environ).load_and_set(
            cfg
        )
        if endpoint:
            cfg.host = endpoint.rstrip("/")
        return cfg
    if endpoint:
        cfg.host = endpoint.rstrip("/")
        return cfg
    path = environ.get(KUBECONFIG_ENV) or str(Path.home() / ".kube" / "config")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"no Kubernetes API configuration: not in a pod (no {token_file}), {CLUSTER_ENDPOINT_ENV} unset, "
            f"and no kubeconfig at {path}; set {CLUSTER_ENDPOINT_ENV} or {KUBECONFIG_ENV}"
        )
    config.load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
    return cfg
