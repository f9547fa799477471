"""The CNI grammar as `hypothesis` strategies: what a runtime, or anyone allowed to exec the plugin, can hand
`aws-cni`. The environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH`, and
`CNI_ARGS` with its own `K=V;...` grammar), the network configuration of every spec version with
`runtimeConfig`, `prevResult` and `cni.dev/valid-attachments`, and raw stdin. Each part is mostly valid, so
that cases get through the shim to ipamd, with hostile values mixed in.

Two limits keep the fuzzing on the test's own ground: every path a case names lies under the fuzz scratch
directory or is the node's own socket and queue (a case never makes the shim write or connect elsewhere on
the machine, nor pass another namespace than ones the test made), and a case never asks for what the spec
lets a runtime legitimately do to the sentinel pods (DEL their attachment, GC without them): any change to
them is then a defect.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hypothesis
from hypothesis import strategies as st

VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
BAD_VERSIONS = ("", "0.4", "1", "1.0", "2.0.0", "99.99.99", "1.0.0-rc1", "v1.0.0", "0.0.0", " 1.0.0", "1..0")
COMMAND_WEIGHTS = (
    ("ADD", 35), ("DEL", 28), ("CHECK", 12), ("STATUS", 5), ("GC", 8), ("VERSION", 4),
    (None, 2), ("", 1), ("add", 1), ("BOGUS", 1),
)  # fmt: skip
VALID_ATTACHMENTS = "cni.dev/valid-attachments"
POD_ANNOTATIONS = "io.kubernetes.cri.pod-annotations"
HEX = "0123456789abcdef"
# Env values cannot hold NUL (execve); surrogates are not encodable. Everything else is fair game.
_ENV_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


class NetnsKind(enum.Enum):
    """What `CNI_NETNS` points at; the executor makes the path (namespaces and files exist only then)."""

    FRESH = "fresh"  # a new, empty sandbox namespace (the common case)
    UNSET = "unset"
    EMPTY = "empty"
    MISSING = "missing"  # a path under the scratch directory that does not exist
    REGULAR_FILE = "regular-file"
    DIRECTORY = "directory"
    DEV_NULL = "dev-null"
    FIFO = "fifo"
    RELATIVE = "relative"
    SENTINEL = "sentinel"  # a live pod's namespace
    NODE = "node"  # the node's own namespace (the shim's and ipamd's)
    SELF = "self"  # /proc/self/ns/net: the shim's own


# FRESH first and most often: hypothesis favours early entries when it simplifies. A FIFO blocks a shim
# that opens it without O_NONBLOCK, so it is kept rare enough that such hangs cannot dominate a run.
_NETNS_WEIGHTS = (
    (NetnsKind.FRESH, 60),
    (NetnsKind.SENTINEL, 6),
    (NetnsKind.MISSING, 5),
    (NetnsKind.UNSET, 4),
    (NetnsKind.EMPTY, 3),
    (NetnsKind.REGULAR_FILE, 4),
    (NetnsKind.DIRECTORY, 3),
    (NetnsKind.DEV_NULL, 3),
    (NetnsKind.RELATIVE, 3),
    (NetnsKind.NODE, 3),
    (NetnsKind.SELF, 3),
    (NetnsKind.FIFO, 1),
)


@dataclass(frozen=True, kw_only=True)
class Attachment:
    container_id: str
    ifname: str
    namespace: str
    name: str
    ip: str


@dataclass(frozen=True, kw_only=True)
class FuzzContext:
    """What the grammar needs from the node under test."""

    network: str  # the conflist's network name
    base: Mapping[str, Any]  # the conflist's plugin entry with cniVersion and name (what libcni sends)
    cni_socket: str
    del_queue_dir: str
    plugin_log: str
    scratch: str  # a directory for hostile paths; nothing else on the machine is named
    cni_path: str
    sentinels: Sequence[Attachment] = ()


@dataclass(frozen=True, kw_only=True)
class CniCase:
    """One plugin invocation: the environment (without CNI_NETNS), where CNI_NETNS points, stdin."""

    env: tuple[tuple[str, str], ...]
    netns: NetnsKind
    stdin: bytes

    @property
    def command(self) -> str:
        return dict(self.env).get("CNI_COMMAND", "")

    def environment(self, netns_path: str | None) -> dict[str, str]:
        env = dict(self.env)
        if netns_path is not None:
            env["CNI_NETNS"] = netns_path
        return env

    def to_json(self) -> dict[str, Any]:
        """The case as JSON (stdin as text when it decodes, else hex), to replay it by hand."""
        try:
            stdin: dict[str, str] = {"stdin": self.stdin.decode()}
        except UnicodeDecodeError:
            stdin = {"stdin_hex": self.stdin.hex()}
        return {"env": dict(self.env), "netns": self.netns.value, **stdin}

    def netconf(self) -> dict[str, Any] | None:
        """stdin as a JSON object, when it is one."""
        try:
            doc = json.loads(self.stdin)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return doc if isinstance(doc, dict) else None


def _weighted(pairs: Sequence[tuple[Any, int]]) -> st.SearchStrategy[Any]:
    return st.sampled_from([value for value, weight in pairs for _ in range(weight)])


def _often(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], *, valid_in_10: int = 8) -> Any:
    return _weighted(((True, valid_in_10), (False, 10 - valid_in_10))).flatmap(
        lambda ok: valid if ok else hostile
    )


def container_ids() -> st.SearchStrategy[str]:
    valid = st.one_of(
        st.text(HEX, min_size=64, max_size=64),
        st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,40}", fullmatch=True),
    )
    hostile = st.one_of(
        st.sampled_from(["", "-lead", ".dot", "a/b", "a b", "ä", "x" * 1025, "../../etc"]),
        _ENV_TEXT,
    )
    return _often(valid, hostile)


def ifnames() -> st.SearchStrategy[str]:
    valid = _weighted((("eth0", 12), ("eth1", 2), ("net1", 1), ("e" * 15, 1)))
    hostile = st.one_of(
        st.sampled_from(["", ".", "..", "a/b", "eth0:1", "eth 0", "e" * 16, "lo", "ïf", "\t"]), _ENV_TEXT
    )
    return _often(valid, hostile)


def k8s_names() -> st.SearchStrategy[str]:
    valid = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,20}[a-z0-9])?", fullmatch=True)
    hostile = st.one_of(st.sampled_from(["", "x" * 254, "a;b", "a=b", "ünï", " lead", "\x7f"]), _ENV_TEXT)
    return _often(valid, hostile)


@st.composite
def cni_args(draw: st.DrawFn, ctx: FuzzContext) -> str:
    """`CNI_ARGS`: `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;...`, or a sentinel's identity, or
    a broken string."""
    if draw(_weighted(((True, 9), (False, 1)))) is False:
        return draw(
            st.one_of(
                st.sampled_from(["", ";;", "=", "K8S_POD_NAME", "a=b;c", "IgnoreUnknown=maybe", "x" * 5000]),
                _ENV_TEXT,
            )
        )
    pairs: list[tuple[str, str]] = []
    if draw(_weighted(((True, 9), (False, 1)))):
        pairs.append(("IgnoreUnknown", draw(_weighted((("1", 8), ("true", 1), ("0", 1))))))
    if ctx.sentinels and draw(_weighted(((True, 1), (False, 9)))):
        # Another sandbox of a live pod (same namespace/name): its veth name collides with the live one's.
        s = draw(st.sampled_from(list(ctx.sentinels)))
        namespace, name = s.namespace, s.name
    else:
        namespace = draw(_often(st.just("fuzz"), k8s_names(), valid_in_10=7))
        name = "fz-" + draw(k8s_names())
    for key, value in (("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", name)):
        if draw(_weighted(((True, 19), (False, 1)))):
            pairs.append((key, value))
    pairs.append(("K8S_POD_INFRA_CONTAINER_ID", draw(container_ids())))
    if draw(st.booleans()):
        pairs.append(("K8S_POD_UID", draw(st.uuids()).hex))
    if draw(_weighted(((True, 1), (False, 4)))):
        pairs.append((draw(st.from_regex(r"[A-Za-z_]{1,12}", fullmatch=True)), draw(_ENV_TEXT)))
    pairs = draw(st.permutations(pairs))
    return ";".join(f"{k}={v}" for k, v in pairs) + draw(_weighted((("", 9), (";", 1))))


def _address() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda c, d: f"10.0.{c}.{d}/32", st.integers(0, 31), st.integers(0, 255)),
        st.sampled_from(
            ["10.0.0.5/32", "10.0.0.5", "fd00::5/128", "300.1.1.1/32", "", "nonsense", "0.0.0.0/0"]
        ),
    )


@st.composite
def prev_results(draw: st.DrawFn, ctx: FuzzContext, version: str) -> Any:
    """A `prevResult` shaped for `version` (sometimes naming a sentinel's address), or a broken one."""
    if draw(_weighted(((True, 8), (False, 2)))) is False:
        return draw(st.sampled_from([None, [], "x", 5, {}, {"ips": "x"}, {"interfaces": [1, 2]}]))
    sentinel_ips = [f"{s.ip}/32" for s in ctx.sentinels]
    address = draw(st.one_of(_address(), st.sampled_from(sentinel_ips)) if sentinel_ips else _address())
    if version in ("0.1.0", "0.2.0"):
        return {"cniVersion": version, "ip4": {"ip": address, "gateway": "169.254.1.1"}, "dns": {}}
    index = draw(_weighted(((0, 6), (1, 1), (-1, 1), (99, 1), ("0", 1))))
    ip: dict[str, Any] = {"address": address, "interface": index}
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        ip["version"] = draw(_weighted((("4", 8), ("6", 1), ("x", 1))))
    interfaces = [
        {"name": "eni" + draw(st.text(HEX, min_size=11, max_size=11))},
        {"name": draw(ifnames()), "sandbox": "/var/run/netns/x"},
    ]
    return {"cniVersion": version, "interfaces": interfaces, "ips": [ip], "dns": {}}


@st.composite
def valid_attachments(draw: st.DrawFn, ctx: FuzzContext) -> Any:
    """GC's list: well formed (always keeping the sentinels, as a runtime would list its live pods) or not."""
    if draw(_weighted(((True, 7), (False, 3)))) is False:
        return draw(
            st.sampled_from(["all", 1, {}, [1], [{"containerID": 1, "ifname": "eth0"}], [{"x": "y"}]])
        )
    keep = [{"containerID": s.container_id, "ifname": s.ifname} for s in ctx.sentinels]
    extra = draw(
        st.lists(
            st.builds(lambda c, i: {"containerID": c, "ifname": i}, container_ids(), ifnames()), max_size=3
        )
    )
    return draw(st.permutations(keep + extra))


def _hostile_path(ctx: FuzzContext, *names: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([f"{ctx.scratch}/{n}" for n in names] + ["relative/path", "", 7]),
        st.builds(lambda s: f"{ctx.scratch}/{s}", st.from_regex(r"[a-z]{1,10}", fullmatch=True)),
    )


@st.composite
def runtime_configs(draw: st.DrawFn) -> Any:
    if draw(_weighted(((True, 8), (False, 2)))) is False:
        return draw(st.sampled_from(["x", [], 5, {"ips": ["10.0.0.9/32"]}, {"mac": "02:00:00:00:00:01"}]))
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out[POD_ANNOTATIONS] = draw(
            st.one_of(
                st.dictionaries(st.sampled_from(["a", "k8s.amazonaws.com/nicConfig"]), _ENV_TEXT, max_size=2),
                st.just({"a": 1}),
                st.just("x"),
            )
        )
    if draw(st.booleans()):
        out["portMappings"] = draw(st.sampled_from([[], [{"hostPort": 80, "containerPort": 80}], "x"]))
    return out


@st.composite
def netconfs(draw: st.DrawFn, ctx: FuzzContext, command: str) -> dict[str, Any]:
    """The plugin config libcni writes to stdin, each field kept, dropped or made hostile."""
    conf = {k: v for k, v in ctx.base.items() if k not in ("cniSocket", "delQueueDir", "pluginLogFile")}
    version = draw(_often(st.sampled_from(VERSIONS), st.sampled_from(BAD_VERSIONS), valid_in_10=9))
    conf["cniVersion"] = version
    if draw(_weighted(((False, 19), (True, 1)))):
        del conf["cniVersion"]
    if draw(_weighted(((False, 9), (True, 1)))):
        conf["cniVersions"] = draw(st.lists(st.sampled_from(VERSIONS + BAD_VERSIONS), max_size=4))
    conf["name"] = draw(
        _often(
            st.just(ctx.network),
            st.one_of(st.sampled_from(["", "-x", "a" * 300, "ünï", "other-net"]), st.just(5)),
        )
    )
    # Where the shim connects, queues and logs: the node's own, or somewhere under the scratch directory.
    conf["cniSocket"] = draw(
        _often(st.just(ctx.cni_socket), _hostile_path(ctx, "nosocket", "file", "dir"), valid_in_10=9)
    )
    conf["delQueueDir"] = draw(_often(st.just(ctx.del_queue_dir), _hostile_path(ctx, "queue", "file")))
    conf["pluginLogFile"] = draw(
        _often(
            st.just(ctx.plugin_log),
            st.sampled_from(["", "stderr", "stdout", "relative.log", f"{ctx.scratch}/dir"]),
        )
    )
    for key, values in (
        ("pluginLogLevel", ["debug", "info", "ERROR", "verbose", 3]),
        ("vethPrefix", ["eni", "abc", "eth", "vlan", "toolong", "a/b", "", 1]),
        ("mtu", [1500, 9001, 575, 9002, "1500", "15x", True, 1.5, -1, None]),
        ("podSGEnforcingMode", ["strict", "standard", "loose", 1]),
        ("type", ["aws-cni", "bridge", ""]),
    ):
        if draw(_weighted(((False, 4), (True, 1)))):
            conf[key] = draw(st.sampled_from(values))
    if draw(_weighted(((False, 3), (True, 1)))):
        conf["runtimeConfig"] = draw(runtime_configs())
    wants_prev = command in ("DEL", "CHECK")
    if draw(_weighted(((wants_prev, 6), (not wants_prev, 1), (False, 3)))):
        conf["prevResult"] = draw(prev_results(ctx, version if version in VERSIONS else "1.0.0"))
    gc_list = command == "GC" or draw(_weighted(((False, 19), (True, 1))))
    if gc_list and draw(_weighted(((True, 9), (False, 1)))):
        conf[VALID_ATTACHMENTS] = draw(valid_attachments(ctx))
    if draw(_weighted(((False, 9), (True, 1)))):
        conf[draw(st.from_regex(r"[a-zA-Z]{1,10}", fullmatch=True))] = draw(
            st.one_of(_ENV_TEXT, st.integers(), st.none(), st.lists(st.integers(), max_size=3))
        )
    return conf


def raw_stdins(ctx: FuzzContext) -> st.SearchStrategy[bytes]:
    """stdin that is no network configuration at all, or one too large to read."""
    too_large = {
        "cniVersion": "1.0.0",
        "name": ctx.network,
        "type": "aws-cni",
        "cniSocket": f"{ctx.scratch}/nosocket",
        "delQueueDir": f"{ctx.scratch}/queue",
        "pluginLogFile": ctx.plugin_log,
        "x": "y" * (1 << 20),
    }
    return st.one_of(
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b'"x"',
                b"{",
                b'{"cniVersion": NaN}',
                b"\xef\xbb\xbf{}",
                b"[" * 100_000,
                b'{"a":' * 5000,
                b" " * (1 << 20) + b"{}",
                json.dumps(too_large).encode(),
            ]
        ),
        st.binary(max_size=200),
    )


@st.composite
def cni_cases(draw: st.DrawFn, ctx: FuzzContext) -> CniCase:
    command = draw(_weighted(COMMAND_WEIGHTS))
    env: dict[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if command is not None:
        env["CNI_COMMAND"] = command
    kind = draw(_weighted(_NETNS_WEIGHTS))
    container_id = draw(container_ids())
    ifname = draw(ifnames())
    if ctx.sentinels and kind is NetnsKind.SENTINEL and command in ("ADD", "CHECK") and draw(st.booleans()):
        s = draw(st.sampled_from(list(ctx.sentinels)))
        container_id = s.container_id  # the live pod's sandbox itself
    for key, value, keep_in_20 in (
        ("CNI_CONTAINERID", container_id, 19),
        ("CNI_IFNAME", ifname, 19),
        ("CNI_PATH", draw(_often(st.just(ctx.cni_path), _ENV_TEXT, valid_in_10=9)), 18),
        ("CNI_ARGS", draw(cni_args(ctx)), 19),
    ):
        if draw(_weighted(((True, keep_in_20), (False, 20 - keep_in_20)))):
            env[key] = value
    if draw(_weighted(((False, 9), (True, 1)))):
        env[draw(st.from_regex(r"[A-Z_]{1,12}", fullmatch=True))] = draw(_ENV_TEXT)
    if draw(_weighted(((True, 9), (False, 1)))):
        stdin = json.dumps(draw(netconfs(ctx, command or "")), allow_nan=True).encode()
    else:
        stdin = draw(raw_stdins(ctx))
    return defang(CniCase(env=tuple(sorted(env.items())), netns=kind, stdin=stdin), ctx)


def defang(case: CniCase, ctx: FuzzContext) -> CniCase:
    """Drop what would legitimately remove a sentinel: a DEL of its very attachment (with a random container
    id instead). GC lists are built to keep them (`valid_attachments`)."""
    env = dict(case.env)
    owned = {(s.container_id, s.ifname) for s in ctx.sentinels}
    if env.get("CNI_COMMAND") == "DEL" and (env.get("CNI_CONTAINERID"), env.get("CNI_IFNAME")) in owned:
        env["CNI_CONTAINERID"] = "0" * 63 + "1"
        return CniCase(env=tuple(sorted(env.items())), netns=case.netns, stdin=case.stdin)
    return case


def generate(ctx: FuzzContext, count: int, *, seed: int) -> tuple[list[CniCase], int]:
    """`count` distinct cases drawn by hypothesis (it repeats examples, so it runs until enough distinct
    ones came, each pass with its own seed). Returns the cases and how many examples were drawn."""
    found: dict[CniCase, None] = {}
    drawn = 0
    for attempt in range(50):
        if len(found) >= count:
            break

        @hypothesis.seed(seed + attempt)
        @hypothesis.settings(
            max_examples=count - len(found) + count // 4 + 10,
            phases=[hypothesis.Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(cni_cases(ctx))
        def collect(case: CniCase) -> None:
            nonlocal drawn
            drawn += 1
            found.setdefault(case, None)

        collect()
    return list(found)[:count], drawn
