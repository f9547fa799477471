"""The trimmed EC2 service model the EC2 client loads, and the botocore session that finds it first.

botocore parses the whole EC2 model (over 800 operations, 4,000 shapes) and the endpoint data of every AWS
service when it builds an EC2 client: about 20 MiB of resident memory for an agent that calls 14
operations. ``scripts/gen_ec2_model.py`` writes, from the installed botocore, a model with only
:data:`EC2_OPERATIONS` and the shapes they reach (documentation dropped) and an ``endpoints.json`` with only
the services this session's clients use. Requests and responses are byte-for-byte what the full model
gives: the same shapes, the same protocol metadata, the same endpoint rules.

The data directory goes first on the search path of a loader private to the session that builds the EC2
client, so nothing else in the process (``vpccni doctor``'s client, the tests' clients) is affected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EC2_API_VERSION = "2016-11-15"

# Every EC2 action `Boto3EC2Api` calls (a unit test checks the adapter calls nothing else).
EC2_OPERATIONS: tuple[str, ...] = (
    "AssignIpv6Addresses",
    "AssignPrivateIpAddresses",
    "AttachNetworkInterface",
    "CreateNetworkInterface",
    "CreateTags",
    "DeleteNetworkInterface",
    "DescribeInstanceTypes",
    "DescribeInstances",
    "DescribeNetworkInterfaces",
    "DescribeSubnets",
    "DetachNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
    "UnassignIpv6Addresses",
    "UnassignPrivateIpAddresses",
)

# Endpoint data kept per partition: EC2 itself, and STS, which the credential chain's web-identity
# provider (IRSA) builds a client for from the same session.
ENDPOINT_SERVICES: tuple[str, ...] = ("ec2", "sts")

DATA_DIR = Path(__file__).with_name("botocore_data")


def model_path(data_dir: Path = DATA_DIR) -> Path:
    return data_dir / "ec2" / EC2_API_VERSION / "service-2.json"


def endpoints_path(data_dir: Path = DATA_DIR) -> Path:
    return data_dir / "endpoints.json"


def trimmed_session(data_dir: Path = DATA_DIR) -> Any:
    """A botocore session whose loader looks in ``data_dir`` before ``AWS_DATA_PATH`` and botocore's own
    data. Does no I/O: botocore reads the files when the client is created."""
    import botocore.loaders
    import botocore.session

    session = botocore.session.Session()
    configured = session.get_config_variable("data_path") or ""
    extra = [os.path.expanduser(os.path.expandvars(p)) for p in configured.split(os.pathsep) if p]
    session.register_component(
        "data_loader", botocore.loaders.Loader(extra_search_paths=[str(data_dir), *extra])
    )
    return session
