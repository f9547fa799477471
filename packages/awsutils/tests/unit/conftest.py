"""Shared fixtures for awsutils' unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

MOTO_REGION = "us-west-2"  # the tests' REGION


@pytest.fixture
def moto_ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's in-process EC2 with fake credentials, and a plain boto3 client for it."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": MOTO_REGION,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    with mock_aws():
        yield boto3.client("ec2", region_name=MOTO_REGION)
