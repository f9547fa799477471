"""Client, urllib3 and socket failures become the wrapper's typed errors."""

from __future__ import annotations

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from vpccni.k8sapi import ApiUnavailable, Conflict, Expired, Forbidden, K8sApiError, NotFound
from vpccni.k8sapi.errors import translated


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, NotFound),
        (409, Conflict),
        (410, Expired),
        (401, Forbidden),
        (403, Forbidden),
        (429, ApiUnavailable),
        (500, ApiUnavailable),
        (503, ApiUnavailable),
        (0, ApiUnavailable),
        (400, K8sApiError),
    ],
)
def test_api_exceptions_by_status(status: int, expected: type[K8sApiError]) -> None:
    with pytest.raises(expected) as info, translated("get node n1"):
        raise ApiException(status=status, reason="x")
    assert type(info.value) is expected
    assert info.value.status == status and "get node n1" in str(info.value)


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.MaxRetryError(None, "/version", reason=ConnectionRefusedError()),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("Connection broken"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_transport_failures_are_unavailable(exc: Exception) -> None:
    with pytest.raises(ApiUnavailable, match="CLUSTER_ENDPOINT"), translated("GET /version"):
        raise exc


def test_forbidden_names_the_fix() -> None:
    with pytest.raises(Forbidden, match="ClusterRole"), translated("annotate pod a/b"):
        raise ApiException(status=403, reason="Forbidden")
