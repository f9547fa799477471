"""pytest fixtures for the testbed: `cloud`, `instance`, `imds`, and dummy AWS credentials in the environment.

Registered in the repo's root conftest.py. Override `cloud_config` in a test module to change the testbed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from vpccni.testbed.cloud import Cloud, CloudConfig, InstanceInfo
from vpccni.testbed.imds.server import ImdsServer


@pytest.fixture
def cloud_config() -> CloudConfig:
    return CloudConfig()


@pytest.fixture
def cloud(cloud_config: CloudConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    testbed = Cloud(cloud_config)
    testbed.start()
    try:
        for key, value in testbed.client_env().items():
            monkeypatch.setenv(key, value)
        # boto3 clients built without endpoint_url reach the testbed too, never AWS.
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", testbed.ec2_endpoint)
        yield testbed
    finally:
        testbed.stop()


@pytest.fixture
def instance(cloud: Cloud) -> InstanceInfo:
    return cloud.launch_instance(instance_type="m5.large")


@pytest.fixture
def imds(cloud: Cloud, instance: InstanceInfo) -> Iterator[ImdsServer]:
    server = cloud.start_imds(instance.instance_id)
    try:
        yield server
    finally:
        server.stop()
