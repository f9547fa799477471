"""`vpccni support-bundle`: one tar.gz with what a maintainer needs to debug a node, and no secrets.

Secrets never enter the archive: environment values whose names contain KEY, SECRET, TOKEN or PASSWORD are
replaced (in the environment listing and wherever `NAME=value` or `"NAME": "value"` shows up in collected
text), and credential files (AWS credentials, kubeconfigs, keys and tokens) are never read.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import posixpath
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field

from vpccni.ipamd.cli.host import HostReader, HttpClient
from vpccni.ipamd.cli.introspect import IntrospectionError, IntrospectionSource
from vpccni.ipamd.cli.nodepaths import DEFAULT_CONFLIST_DIRS, conflist_dirs
from vpccni.ipamd.settings import read_settings

SENSITIVE_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
REDACTED = "<redacted>"
MAX_FILE_BYTES = 20 * 1024 * 1024  # keep the tail of bigger logs
INTROSPECTION_PATHS = (
    "/v1/enis",
    "/v1/pool",
    "/v1/eni-configs",
    "/v1/networkutils-env-settings",
    "/v1/ipamd-env-settings",
)
COMMANDS: Mapping[str, list[str]] = {
    "ip-addr.txt": ["ip", "-d", "addr", "show"],
    "ip-link.txt": ["ip", "-d", "-s", "link", "show"],
    "ip-route-all-tables.txt": ["ip", "route", "show", "table", "all"],
    "ip-rule.txt": ["ip", "rule", "show"],
    "ip-neigh.txt": ["ip", "neigh", "show"],
    "iptables-save.txt": ["iptables-save"],
    "iptables-legacy-save.txt": ["iptables-legacy-save"],
    "iptables-nft-save.txt": ["iptables-nft-save"],
    "nft-ruleset.txt": ["nft", "list", "ruleset"],
    "iptables-version.txt": ["iptables", "--version"],
}
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/tcp_early_demux",
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/default/rp_filter",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/all/disable_ipv6",
)
# Per-interface sysctls gathered for every interface under /proc/sys/net/ipv4/conf.
INTERFACE_SYSCTLS = ("rp_filter", "forwarding", "accept_local", "proxy_arp")
_CREDENTIAL_PATTERNS = (
    re.compile(r"(^|/)\.aws(/|$)"),
    re.compile(r"(^|/)credentials?$"),
    re.compile(r"(^|/)(kubeconfig|\.kube)(/|$)"),
    re.compile(r"(^|/)token$"),
    re.compile(r"\.(pem|key|p12|pfx)$"),
)


def is_sensitive_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SENSITIVE_MARKERS)


def redact_environ(env: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_sensitive_name(k) and v else v) for k, v in sorted(env.items())}


def is_credential_file(path: str) -> bool:
    return any(p.search(path) for p in _CREDENTIAL_PATTERNS)


_ASSIGNMENT = re.compile(r"""(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>=|"\s*:\s*")(?P<value>[^\s"',;&]+)""")


def scrub_text(text: str, env: Mapping[str, str] | None = None) -> str:
    """Blank `NAME=value` / `"NAME": "value"` for sensitive names, and any literal sensitive env value."""

    def replace(match: re.Match[str]) -> str:
        if is_sensitive_name(match.group("name")):
            return f"{match.group('name')}{match.group('sep')}{REDACTED}"
        return match.group(0)

    out = _ASSIGNMENT.sub(replace, text)
    for name, value in (env or {}).items():
        if is_sensitive_name(name) and len(value) >= 6:  # short values would blank unrelated text
            out = out.replace(value, REDACTED)
    return out


@dataclass(frozen=True, kw_only=True)
class BundleConfig:
    log_dirs: tuple[str, ...] = ("/var/log/aws-routed-eni", "/host/var/log/aws-routed-eni")
    extra_files: tuple[str, ...] = ()
    checkpoint: str = "/var/run/aws-node/ipam.json"
    conflist_dirs: tuple[str, ...] = DEFAULT_CONFLIST_DIRS
    metrics_url: str = "http://127.0.0.1:61678/metrics"

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> BundleConfig:
        """From ipamd's settings, read leniently (a bundle is collected most often on a broken node)."""
        s, _ = read_settings(env)
        in_log_dirs = any(s.log_file.startswith(d + "/") for d in cls.log_dirs)
        host, _, port = s.metrics_bind_address.rpartition(":")
        if host in ("", "0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return cls(
            extra_files=(s.log_file,) if s.log_file.startswith("/") and not in_log_dirs else (),
            checkpoint=s.backing_store,
            conflist_dirs=conflist_dirs(s),
            metrics_url=f"http://{host}:{port}/metrics",
        )


@dataclass(kw_only=True)
class Bundle:
    """Archive path (relative to the bundle root) → content, plus what could not be collected and why."""

    entries: dict[str, bytes] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def add_text(self, name: str, text: str) -> None:
        self.entries[name] = text.encode()


def collect(
    *, host: HostReader, http: HttpClient, introspection: IntrospectionSource, config: BundleConfig
) -> Bundle:
    bundle = Bundle()
    env = dict(host.environ())
    bundle.add_text("env.txt", "".join(f"{k}={v}\n" for k, v in redact_environ(env).items()))

    for path in INTROSPECTION_PATHS:
        name = "introspection/" + path.rsplit("/", 1)[1] + ".json"
        try:
            doc = introspection.get_json(path)
        except IntrospectionError as exc:
            bundle.missing[name] = str(exc)
            continue
        bundle.add_text(name, scrub_text(json.dumps(doc, indent=1, sort_keys=True), env))

    try:
        metrics = http.request("GET", config.metrics_url, timeout_s=5.0)
        bundle.add_text("metrics.txt", scrub_text(metrics.body, env))
    except OSError as exc:
        bundle.missing["metrics.txt"] = f"{config.metrics_url}: {exc}"

    for name, argv in COMMANDS.items():
        result = host.run(argv)
        if result is None:
            bundle.missing["commands/" + name] = f"{argv[0]} is not installed"
            continue
        text = f"$ {' '.join(argv)}\n(exit {result.returncode})\n{result.stdout}"
        if result.stderr:
            text += f"\n--- stderr\n{result.stderr}"
        bundle.add_text("commands/" + name, scrub_text(text, env))

    bundle.add_text("sysctls.txt", _sysctls(host))

    files = [config.checkpoint, *config.extra_files]
    files += [posixpath.join(d, n) for d in config.log_dirs for n in host.list_dir(d)]
    files += [posixpath.join(d, n) for d in config.conflist_dirs for n in host.list_dir(d)]
    for path in dict.fromkeys(files):  # de-duplicated, in order
        name = "files/" + path.lstrip("/")
        if is_credential_file(path):
            bundle.missing[name] = "credential file: never collected"
            continue
        content = host.read_text(path)
        if content is None:
            bundle.missing[name] = "missing or unreadable"
            continue
        bundle.add_text(name, scrub_text(content[-MAX_FILE_BYTES:], env))
    return bundle


def _sysctls(host: HostReader) -> str:
    keys = list(SYSCTLS)
    for ifname in host.list_dir("/proc/sys/net/ipv4/conf"):
        keys += [f"net/ipv4/conf/{ifname}/{leaf}" for leaf in INTERFACE_SYSCTLS]
    lines = []
    for key in dict.fromkeys(keys):
        value = host.read_text("/proc/sys/" + key)
        lines.append(f"{key.replace('/', '.')} = {value.strip() if value is not None else '<unreadable>'}")
    return "\n".join(lines) + "\n"


def write_archive(bundle: Bundle, out: io.BufferedIOBase | str, *, now: dt.datetime | None = None) -> str:
    """Write the bundle as tar.gz under one top folder `vpccni-support-<UTC time>/`; returns that folder."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    root = f"vpccni-support-{stamp}"
    manifest = {
        "created": stamp,
        "files": sorted(bundle.entries),
        "not_collected": dict(sorted(bundle.missing.items())),
    }
    entries = {**bundle.entries, "manifest.json": json.dumps(manifest, indent=1).encode()}
    mtime = int((now or dt.datetime.now(dt.UTC)).timestamp())
    with tarfile.open(
        fileobj=out if not isinstance(out, str) else None,
        name=out if isinstance(out, str) else None,
        mode="w:gz",
    ) as tar:
        for name, data in sorted(entries.items()):
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return root
