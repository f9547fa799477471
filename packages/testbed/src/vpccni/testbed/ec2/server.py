"""The EC2 endpoint: a WSGI front for moto's server that throttles, delays, fails, logs and adds fidelity."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from vpccni.testbed.control import CONTROL_PATH
from vpccni.testbed.ec2.calllog import CallLog, CallRecord
from vpccni.testbed.ec2.errors import Ec2Error
from vpccni.testbed.ec2.faults import FaultPlan
from vpccni.testbed.ec2.fidelity import FidelityLayer, Forward, Handled
from vpccni.testbed.ec2.throttle import MUTATING, Throttle, action_category
from vpccni.testbed.events import Event, StateChanged
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
# How often a serving loop checks for shutdown: short, so stopping a testbed is quick.
POLL_INTERVAL = 0.05
Response = tuple[str, list[tuple[str, str]], bytes]


def _error_code(body: bytes) -> str | None:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for elem in root.iter():
        if elem.tag.rsplit("}", 1)[-1] == "Code":
            return elem.text
    return None


class Ec2App:
    """WSGI app. Every request is pinned to this testbed's moto account so testbeds never share state."""

    def __init__(
        self,
        *,
        account_id: str,
        fidelity: FidelityLayer,
        throttle: Throttle,
        faults: FaultPlan,
        calllog: CallLog,
        publish: Callable[[list[Event]], None],
        control: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._control = control
        self._account_id = account_id
        self._fidelity = fidelity
        self._throttle = throttle
        self._faults = faults
        self._calllog = calllog
        self._publish = publish
        self._moto = DomainDispatcherApplication(create_backend_app)
        # One lock for EC2 state: allocation decisions and moto's mutation must be atomic.
        self.state_lock = threading.RLock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = self._account_id
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if environ.get("PATH_INFO") == CONTROL_PATH and self._control is not None:
            status, headers, body = self._serve_control(raw)
            start_response(status, headers)
            return [body]
        params = dict(parse_qsl(raw.decode() or environ.get("QUERY_STRING", ""), keep_blank_values=True))
        action = params.get("Action")
        if action is None:  # not an EC2 query-protocol call: let moto answer as it would
            status, headers, body = self._call_moto(environ, raw)
        else:
            status, headers, body = self._serve(environ, action, params)
        start_response(status, headers)
        return [body]

    def _serve_control(self, raw: bytes) -> Response:
        assert self._control is not None
        try:
            status, answer = "200 OK", self._control(json.loads(raw or b"{}"))
        except (ValueError, KeyError, TypeError) as exc:
            status, answer = "400 Bad Request", {"error": str(exc)}
        body = json.dumps(answer).encode()
        return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body

    def _serve(self, environ: dict[str, Any], action: str, params: dict[str, str]) -> Response:
        started, t0 = time.time(), time.monotonic()
        events: list[Event] = []
        self._calllog.begin(action)
        try:
            status, headers, body, events = self._handle(environ, action, params)
            code = None if status.startswith("200") else _error_code(body)
        except Ec2Error as err:
            body, code = err.to_xml(), err.code
            status, headers = (
                f"{err.status} Error",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))],
            )
        finally:
            self._calllog.end(action)
        self._calllog.append(
            CallRecord(
                action=action, params=params, error_code=code, started=started, duration=time.monotonic() - t0
            )
        )
        if code is None and action_category(action) == MUTATING:
            events.append(StateChanged(action=action, eni_id=params.get("NetworkInterfaceId", "")))
        if events:
            self._publish(events)
        log.debug("EC2 %s -> %s", action, code or "OK")
        return status, headers, body

    def _handle(
        self, environ: dict[str, Any], action: str, params: dict[str, str]
    ) -> tuple[str, list[tuple[str, str]], bytes, list[Event]]:
        if not self._throttle.admit(action, params):
            raise Ec2Error("RequestLimitExceeded", "Request limit exceeded.")
        delay = self._faults.latency(action)
        if delay:
            time.sleep(delay)
        with self.state_lock:
            subnet_id = self._fidelity.subnet_of_call(action, params)
        injected = self._faults.take_error(action, subnet_id)
        if injected is not None:
            raise Ec2Error(injected.code, injected.message)
        with self.state_lock:
            plan = self._fidelity.plan(action, params)
            if isinstance(plan, Handled):
                headers = [("Content-Type", "text/xml"), ("Content-Length", str(len(plan.body)))]
                return "200 OK", headers, plan.body, list(plan.events)
            assert isinstance(plan, Forward)
            status, headers, body = self._call_moto(environ, urlencode(plan.params).encode())
            if not status.startswith("200") or plan.finish is None:
                return status, headers, body, []
            body, events = plan.finish(body)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
            return status, headers, body, events

    def _call_moto(self, environ: dict[str, Any], body: bytes) -> Response:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, list(headers)

        chunks = self._moto(env, start_response)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(data))))
        return captured["status"], headers, data


class _QuietHandler(MotoRequestHandler):
    """moto's request handler, logging through `logging` instead of writing every request to stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("EC2 HTTP %s %s", self.requestline, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Ec2Server:
    """Serves an `Ec2App` (or another of the testbed's WSGI apps) on host:port (0 picks a free port) from a
    background thread."""

    def __init__(self, app: WsgiApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = make_server(
            self._host, self._port, self._app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name="testbed-ec2",
            daemon=True,
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the EC2 server is not started: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
