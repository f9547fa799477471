"""The core/v1 requests ipamd (and the cluster view: ``cluster.py``) make, and a list or watch of any
collection, sent through the official client's ``ApiClient`` as raw JSON.

``kubernetes.client.CoreV1Api`` would do the same, but creating it imports the generated module of every
core/v1 operation and the model classes they name: about 21 MiB of resident memory for calls whose
responses are read as raw JSON anyway. Requests go through the same ``ApiClient`` (configuration,
authentication, TLS, user agent, connection pool) and the same path, query and header conventions as the
generated methods; a non-2xx answer raises ``ApiException`` like they do.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
Timeout = float | tuple[float, float]


class CoreV1Requests:
    """Raw-response core/v1 calls: each returns the urllib3 response (the caller reads and releases it)."""

    def __init__(self, api_client: ApiClient) -> None:
        self._client = api_client

    def read_node(self, name: str, *, timeout: Timeout) -> Any:
        """GET /api/v1/nodes/{name}."""
        return self._request("GET", "/api/v1/nodes/{name}", {"name": name}, timeout=timeout)

    def create_namespaced_event(self, namespace: str, body: dict[str, Any], *, timeout: Timeout) -> Any:
        """POST /api/v1/namespaces/{namespace}/events."""
        return self._request(
            "POST",
            "/api/v1/namespaces/{namespace}/events",
            {"namespace": namespace},
            body=body,
            timeout=timeout,
        )

    def patch_namespaced_pod(
        self, name: str, namespace: str, body: dict[str, Any], *, timeout: Timeout
    ) -> Any:
        """PATCH /api/v1/namespaces/{namespace}/pods/{name} as a JSON merge patch."""
        return self._request(
            "PATCH",
            "/api/v1/namespaces/{namespace}/pods/{name}",
            {"namespace": namespace, "name": name},
            body=body,
            content_type=MERGE_PATCH,
            timeout=timeout,
        )

    def list_pods(
        self,
        *,
        field_selector: str,
        timeout: Timeout,
        resource_version: str | None = None,
        watch: bool = False,
        allow_watch_bookmarks: bool = False,
        timeout_seconds: int | None = None,
    ) -> Any:
        """GET /api/v1/pods (every namespace), optionally as a watch."""
        return self.list_collection(
            "/api/v1/pods",
            field_selector=field_selector,
            timeout=timeout,
            resource_version=resource_version,
            watch=watch,
            allow_watch_bookmarks=allow_watch_bookmarks,
            timeout_seconds=timeout_seconds,
        )

    def list_collection(
        self,
        path: str,
        *,
        timeout: Timeout,
        field_selector: str = "",
        resource_version: str | None = None,
        watch: bool = False,
        allow_watch_bookmarks: bool = False,
        timeout_seconds: int | None = None,
    ) -> Any:
        """GET any collection (``/api/v1/pods``, ``/apis/<group>/<version>/<plural>``), optionally as a watch:
        the same request for core and custom resources, which is all a list-and-watch needs."""
        query: list[tuple[str, Any]] = []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if allow_watch_bookmarks:
            query.append(("allowWatchBookmarks", True))
        if timeout_seconds is not None:
            query.append(("timeoutSeconds", timeout_seconds))
        if watch:
            query.append(("watch", True))
        return self._request("GET", path, {}, query=query, timeout=timeout)

    def list_nodes(self, *, timeout: Timeout) -> Any:
        """GET /api/v1/nodes."""
        return self._request("GET", "/api/v1/nodes", {}, timeout=timeout)

    def list_namespaced_pods(self, namespace: str, *, label_selector: str, timeout: Timeout) -> Any:
        """GET /api/v1/namespaces/{namespace}/pods?labelSelector=... (namespace "": every namespace)."""
        query = [("labelSelector", label_selector)] if label_selector else []
        if not namespace:
            return self._request("GET", "/api/v1/pods", {}, query=query, timeout=timeout)
        return self._request(
            "GET",
            "/api/v1/namespaces/{namespace}/pods",
            {"namespace": namespace},
            query=query,
            timeout=timeout,
        )

    def proxy_pod_get(self, namespace: str, name: str, port: int, path: str, *, timeout: Timeout) -> Any:
        """GET /api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/{path}: the API server relays the GET
        to the pod (what ``kubectl get --raw`` and upstream's cni-metrics-helper use)."""
        return self._request(
            "GET",
            "/api/v1/namespaces/{namespace}/pods/{name}/proxy/" + path.lstrip("/"),
            {"namespace": namespace, "name": f"{name}:{port}"},
            accept="text/plain, */*",
            timeout=timeout,
        )

    def _request(
        self,
        method: str,
        path: str,
        path_params: dict[str, str],
        *,
        timeout: Timeout,
        query: list[tuple[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> Any:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self._client.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*request, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response
