"""Typed errors for Kubernetes API calls, so callers can keep running when the API server is away."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException


class K8sApiError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP code (0 when none was received)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ApiUnavailable(K8sApiError):
    """The API server could not be reached or answered 5xx/429: retry later; cached state stays valid."""


class NotFound(K8sApiError):
    """The object does not exist."""


class Conflict(K8sApiError):
    """The object changed since it was read (optimistic lock) or already exists: re-read and retry."""


class Forbidden(K8sApiError):
    """The aws-node service account lacks an RBAC permission (see the aws-node ClusterRole)."""


class Expired(K8sApiError):
    """410 Gone: the resourceVersion is older than the server's history; relist."""


def from_api_exception(exc: ApiException, what: str) -> K8sApiError:
    status = int(exc.status or 0)
    detail = f"{what}: HTTP {status} {exc.reason or ''}".strip()
    if status == 404:
        return NotFound(f"{detail}: the object does not exist", status=status)
    if status == 409:
        return Conflict(
            f"{detail}: the object changed or already exists; re-read it and retry", status=status
        )
    if status == 410:
        return Expired(f"{detail}: the resourceVersion is too old; relist", status=status)
    if status in (401, 403):
        return Forbidden(
            f"{detail}: grant the aws-node service account this verb in its ClusterRole "
            "(e.g. 'patch pods' for ANNOTATE_POD_IP)",
            status=status,
        )
    if status == 0 or status == 429 or status >= 500:
        return ApiUnavailable(
            f"{detail}: the Kubernetes API server is unavailable; check CLUSTER_ENDPOINT and that the "
            "API server is reachable from the node (the call will be retried)",
            status=status,
        )
    return K8sApiError(detail, status=status)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn client, urllib3 and socket errors raised inside the block into K8sApiError subclasses."""
    try:
        yield
    except K8sApiError:
        raise
    except ApiException as exc:
        raise from_api_exception(exc, what) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ApiUnavailable(
            f"{what}: cannot reach the Kubernetes API server ({type(exc).__name__}: {exc}); check "
            "CLUSTER_ENDPOINT and that the API server is reachable from the node (the call will be retried)"
        ) from exc
