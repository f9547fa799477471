"""The real IMDSv2 client against a small IMDSv2 server on loopback (token PUT, TTL, 401, 404, 5xx)."""

from __future__ import annotations

import http.server
import ipaddress
import threading
import uuid
from collections.abc import Iterator

import pytest
from vpccni.awsutils.backoff import Backoff
from vpccni.awsutils.errors import ImdsError, ImdsNotFoundError, ImdsUnavailableError
from vpccni.awsutils.imds import ImdsConfig, ImdsHttpClient, InstanceMetadata
from vpccni.awsutils.testing import FakeClock, FakeImds, RecordingObserver


class Imdsv2:
    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.tokens: set[str] = set()
        self.token_puts: list[str] = []  # requested TTLs
        self.fail_statuses: list[int] = []
        self.gets = 0


def _handler(state: Imdsv2) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def _send(self, status: int, body: str = "") -> None:
            raw = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_PUT(self) -> None:
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if self.path != "/latest/api/token" or not ttl:
                return self._send(400)
            token = uuid.uuid4().hex
            state.tokens.add(token)
            state.token_puts.append(ttl)
            self._send(200, token)

        def do_GET(self) -> None:
            state.gets += 1
            if state.fail_statuses:
                return self._send(state.fail_statuses.pop(0))
            if self.headers.get("X-aws-ec2-metadata-token") not in state.tokens:
                return self._send(401)  # IMDSv1 (no token) is refused, as on hardened nodes
            path = self.path.removeprefix("/latest/meta-data/")
            if path not in state.data:
                return self._send(404)
            self._send(200, state.data[path])

    return Handler


@pytest.fixture
def imdsv2() -> Iterator[tuple[Imdsv2, str]]:
    state = Imdsv2({"instance-id": "i-0abc", "placement/region": "us-west-2", "mac": "02:00:00:00:00:01"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _client(endpoint: str, clock: FakeClock, observer: RecordingObserver | None = None) -> ImdsHttpClient:
    config = ImdsConfig(
        endpoint=endpoint,
        token_ttl_s=600,
        refresh_margin_s=60,
        timeout_s=2,
        retry=Backoff(initial_s=0.01, max_s=0.05, attempts=3),
    )
    return ImdsHttpClient(config, clock=clock, observer=observer)


def test_token_is_fetched_once_and_reused(imdsv2: tuple[Imdsv2, str]) -> None:
    state, endpoint = imdsv2
    observer = RecordingObserver()
    client = _client(endpoint, FakeClock(), observer)
    assert client.get("instance-id") == "i-0abc"
    assert client.get("placement/region") == "us-west-2"
    assert state.token_puts == ["600"]
    assert [c[0] for c in observer.calls] == ["GetMetadata", "GetMetadata"]
    assert all(c[2] is None for c in observer.calls)


def test_token_is_refreshed_before_it_expires(imdsv2: tuple[Imdsv2, str]) -> None:
    state, endpoint = imdsv2
    clock = FakeClock()
    client = _client(endpoint, clock)
    client.get("instance-id")
    clock.advance(530)  # 70 s left: still outside the 60 s margin
    client.get("instance-id")
    assert len(state.token_puts) == 1
    clock.advance(20)  # 50 s left: refresh now rather than race the expiry
    client.get("instance-id")
    assert len(state.token_puts) == 2


def test_rejected_token_is_replaced_once(imdsv2: tuple[Imdsv2, str]) -> None:
    state, endpoint = imdsv2
    client = _client(endpoint, FakeClock())
    client.get("instance-id")
    state.tokens.clear()  # IMDS restarted: every old token is invalid
    assert client.get("instance-id") == "i-0abc"
    assert len(state.token_puts) == 2


def test_404_is_not_found_and_lists_read_as_empty(imdsv2: tuple[Imdsv2, str]) -> None:
    state, endpoint = imdsv2
    observer = RecordingObserver()
    client = _client(endpoint, FakeClock(), observer)
    with pytest.raises(ImdsNotFoundError):
        client.get("network/interfaces/macs/02:00:00:00:00:01/ipv4-prefix")
    assert InstanceMetadata(client).ipv4_prefixes("02:00:00:00:00:01") == []
    assert observer.calls[0][2] == "404"
    assert state.gets == 2  # a 404 is an answer: no retry


def test_server_errors_are_retried_with_backoff(imdsv2: tuple[Imdsv2, str]) -> None:
    state, endpoint = imdsv2
    clock = FakeClock()
    client = _client(endpoint, clock)
    state.fail_statuses = [503, 500]
    assert client.get("instance-id") == "i-0abc"
    assert clock.sleeps == [pytest.approx(0.01), pytest.approx(0.02)]


def test_unavailable_after_retries_names_the_fix(imdsv2: tuple[Imdsv2, str]) -> None:
    state, endpoint = imdsv2
    observer = RecordingObserver()
    client = _client(endpoint, FakeClock(), observer)
    state.fail_statuses = [503] * 5
    with pytest.raises(ImdsUnavailableError, match="AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        client.get("instance-id")
    assert observer.calls[-1][2] == "ImdsUnavailableError"


def test_client_errors_are_not_retried(imdsv2: tuple[Imdsv2, str]) -> None:
    state, endpoint = imdsv2
    client = _client(endpoint, FakeClock())
    state.fail_statuses = [403]
    with pytest.raises(ImdsError, match="HTTP 403"):
        client.get("instance-id")


def test_connection_refused_is_unavailable() -> None:
    with pytest.raises(ImdsUnavailableError):
        _client("http://127.0.0.1:9", FakeClock()).get("instance-id")


def _two_eni_imds() -> FakeImds:
    imds = FakeImds(
        {
            "instance-id": "i-0abc",
            "instance-type": "m5.large",
            "placement/region": "us-west-2",
            "placement/availability-zone": "us-west-2a",
            "mac": "02:00:00:00:00:01",
            "local-ipv4": "10.0.0.10",
        }
    )
    imds.set_eni(
        "02:00:00:00:00:01",
        eni_id="eni-1",
        device_number=2,
        subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/20",
        vpc_id="vpc-1",
        vpc_cidrs=["10.0.0.0/16", "100.64.0.0/16"],
        ipv4s=["10.0.0.10", "10.0.0.11"],
        security_groups=["sg-1", "sg-2"],
    )
    imds.set_eni(
        "02:00:00:00:00:02",
        eni_id="eni-2",
        device_number=1,
        subnet_id="subnet-2",
        subnet_cidr="10.0.16.0/20",
        vpc_id="vpc-1",
        ipv4s=["10.0.16.5"],
        ipv4_prefixes=["10.0.16.32/28"],
        network_card=0,
    )
    return imds


def test_typed_getters_over_the_map() -> None:
    md = InstanceMetadata(_two_eni_imds())
    assert (md.instance_id(), md.instance_type(), md.region(), md.availability_zone()) == (
        "i-0abc",
        "m5.large",
        "us-west-2",
        "us-west-2a",
    )
    assert md.local_ipv4() == ipaddress.IPv4Address("10.0.0.10")
    assert md.ipv6() is None
    mac = md.primary_mac()
    assert md.macs() == ["02:00:00:00:00:01", "02:00:00:00:00:02"]
    assert md.vpc_ipv4_cidrs(mac) == [
        ipaddress.IPv4Network("10.0.0.0/16"),
        ipaddress.IPv4Network("100.64.0.0/16"),
    ]
    assert md.security_group_ids(mac) == ["sg-1", "sg-2"]
    assert md.ipv6s(mac) == [] and md.ipv6_prefixes(mac) == [] and md.subnet_ipv6_cidrs(mac) == []
    assert md.vpc_ipv6_cidrs(mac) == []


def test_attached_enis_primary_first_with_device_number_forced_to_zero() -> None:
    enis = InstanceMetadata(_two_eni_imds()).attached_enis()
    assert [e.eni_id for e in enis] == ["eni-1", "eni-2"]
    primary, secondary = enis
    assert primary.device_number == 0  # IMDS said 2: the primary MAC is always device 0
    assert primary.primary_ipv4 == ipaddress.IPv4Address("10.0.0.10")
    assert primary.secondary_ipv4s == (ipaddress.IPv4Address("10.0.0.11"),)
    assert secondary.device_number == 1 and secondary.subnet_ipv4_cidr == ipaddress.IPv4Network(
        "10.0.16.0/20"
    )
    assert secondary.ipv4_prefixes == (ipaddress.IPv4Network("10.0.16.32/28"),)
    assert not secondary.is_efa_only
