"""CloudWatch beside the testbed's EC2: moto's CloudWatch on its own port, pinned to the testbed's moto
account (testbeds in one process never share metrics), for the cni-metrics-helper to publish to and a test to
read back with ``get_metric_data``. Clients find it through ``AWS_ENDPOINT_URL_CLOUDWATCH``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from moto.cloudwatch.models import cloudwatch_backends
from moto.moto_server.werkzeug_app import create_backend_app
from vpccni.testbed.ec2.server import Ec2Server, StartResponse

ENDPOINT_ENV = "AWS_ENDPOINT_URL_CLOUDWATCH"


class CloudWatchService:
    def __init__(self, *, account_id: str, region: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._account_id = account_id
        self._region = region
        self._moto = create_backend_app("cloudwatch")
        self._server = Ec2Server(self._app, host=host, port=port)
        self._started = False

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = self._account_id
        return self._moto(environ, start_response)

    def start(self) -> None:
        if not self._started:
            self._server.start()
            self._started = True

    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    def stop(self) -> None:
        """Idempotent; drops the metrics this testbed's account holds."""
        if self._started:
            self._server.stop()
            self._started = False
            cloudwatch_backends[self._account_id].reset()
