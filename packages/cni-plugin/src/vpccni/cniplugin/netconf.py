"""The network configuration aws-cni reads from stdin: decoding, validation and upstream's defaults."""

from __future__ import annotations

from vpccni.cniplugin import jsoncodec, versions
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.values import FrozenValue

MAX_STDIN_BYTES = 1 << 20
DEFAULT_CNI_SOCKET = "/var/run/aws-node/cni.sock"
DEFAULT_DEL_QUEUE_DIR = "/var/run/aws-node/del-queue"
DEFAULT_VETH_PREFIX = "eni"
DEFAULT_MTU = 9001
MIN_MTU = 576
MAX_MTU = 9001
SG_ENFORCING_MODES = ("strict", "standard")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "fatal", "panic")
POD_ANNOTATIONS_KEY = "io.kubernetes.cri.pod-annotations"
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
MULTI_NIC_ANNOTATION = "k8s.amazonaws.com/nicConfig"
MULTI_NIC_VALUE = "multi-nic-attachment"
# Capabilities that ask for a specific address or MAC: aws-cni cannot honour them (spec code 2).
UNSUPPORTED_RUNTIME_KEYS = ("ips", "mac")
# Reserved for other host interfaces: a pod veth named like them would be matched by the wrong rules.
RESERVED_VETH_PREFIXES = ("eth", "vlan", "lo")
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")


def _config_error(msg: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, msg)


class NetConf(FrozenValue):
    """The validated configuration; ``raw`` keeps every key (unknown ones included) as the runtime sent it."""

    __slots__ = (
        "cni_socket",
        "cni_version",
        "del_queue_dir",
        "mtu",
        "name",
        "plugin_log_file",
        "plugin_log_level",
        "pod_annotations",
        "pod_sg_enforcing_mode",
        "port_mappings",
        "prev_result",
        "raw",
        "valid_attachments",
        "veth_prefix",
    )  # fmt: skip
    raw: dict[str, object]
    name: str
    cni_version: str
    veth_prefix: str
    mtu: int
    pod_sg_enforcing_mode: str
    plugin_log_file: str
    plugin_log_level: str
    pod_annotations: dict[str, str]
    port_mappings: list[object] | None
    prev_result: dict[str, object] | None
    cni_socket: str
    del_queue_dir: str
    valid_attachments: tuple[tuple[str, str], ...] | None

    def __init__(
        self, *, raw: dict[str, object], name: str, cni_version: str, veth_prefix: str = DEFAULT_VETH_PREFIX,
        mtu: int = DEFAULT_MTU, pod_sg_enforcing_mode: str = "strict", plugin_log_file: str = "",
        plugin_log_level: str = "debug", pod_annotations: dict[str, str] | None = None,
        port_mappings: list[object] | None = None, prev_result: dict[str, object] | None = None,
        cni_socket: str = DEFAULT_CNI_SOCKET, del_queue_dir: str = DEFAULT_DEL_QUEUE_DIR,
        valid_attachments: tuple[tuple[str, str], ...] | None = None,
    ) -> None:  # fmt: skip
        self._set("raw", raw)
        self._set("name", name)
        self._set("cni_version", cni_version)
        self._set("veth_prefix", veth_prefix)
        self._set("mtu", mtu)
        self._set("pod_sg_enforcing_mode", pod_sg_enforcing_mode)
        self._set("plugin_log_file", plugin_log_file)
        self._set("plugin_log_level", plugin_log_level)
        self._set("pod_annotations", dict(pod_annotations or {}))
        self._set("port_mappings", port_mappings)
        self._set("prev_result", prev_result)
        self._set("cni_socket", cni_socket)
        self._set("del_queue_dir", del_queue_dir)
        self._set("valid_attachments", valid_attachments)

    @property
    def requires_multi_nic_attachment(self) -> bool:
        return self.pod_annotations.get(MULTI_NIC_ANNOTATION) == MULTI_NIC_VALUE


def decode(data: bytes) -> dict[str, object]:
    """stdin bytes -> the JSON object (code 6 when it is not one, code 7 when it is too large)."""
    if len(data) > MAX_STDIN_BYTES:
        raise _config_error(f"network configuration is larger than {MAX_STDIN_BYTES} bytes")
    try:
        value = jsoncodec.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"network configuration on stdin is not valid JSON: {exc}"
        ) from None
    if not isinstance(value, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, "network configuration on stdin must be a JSON object")
    return value


def clamp_mtu(value: object) -> int:
    """Upstream's rule: a value outside [576, 9001] or not a number falls back to 9001."""
    if value is None or isinstance(value, bool):
        return DEFAULT_MTU
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 12:
        number = int(value)
    else:
        return DEFAULT_MTU
    return number if MIN_MTU <= number <= MAX_MTU else DEFAULT_MTU


def _string(raw: dict[str, object], key: str, default: str, limit: int = 4096) -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _config_error(f"{key} must be a string, got {type(value).__name__}")
    if len(value) > limit or "\0" in value:
        raise _config_error(f"{key} must be at most {limit} characters without NUL")
    return value


def _abs_path(raw: dict[str, object], key: str, default: str) -> str:
    value = _string(raw, key, default) or default
    if not value.startswith("/"):
        raise _config_error(f"{key}={value[:80]!r} must be an absolute path")
    return value


def _name(raw: dict[str, object]) -> str:
    name = _string(raw, "name", "", limit=253)
    if not name or name[0] not in _NAME_FIRST or not set(name) <= _NAME_REST:
        raise _config_error(
            f"network name {name[:80]!r} is invalid: it must start with a letter or digit and contain only "
            "letters, digits, '_', '.' and '-'"
        )
    return name


def _veth_prefix(raw: dict[str, object]) -> str:
    prefix = _string(raw, "vethPrefix", DEFAULT_VETH_PREFIX, limit=64) or DEFAULT_VETH_PREFIX
    if len(prefix) > 4:
        raise _config_error(f"vethPrefix={prefix[:20]!r} can be at most 4 characters long")
    if prefix in RESERVED_VETH_PREFIXES:
        raise _config_error(f"vethPrefix={prefix!r} cannot be eth, vlan or lo (use e.g. eni)")
    if not set(prefix) <= _NAME_REST:
        raise _config_error(f"vethPrefix={prefix!r} may only contain letters, digits, '_', '.' and '-'")
    return prefix


def _runtime_config(raw: dict[str, object]) -> tuple[dict[str, str], list[object] | None]:
    runtime = raw.get("runtimeConfig")
    if runtime is None:
        runtime = {}
    if not isinstance(runtime, dict):
        raise _config_error("runtimeConfig must be a JSON object")
    annotations = runtime.get(POD_ANNOTATIONS_KEY)
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise _config_error(f"runtimeConfig[{POD_ANNOTATIONS_KEY!r}] must map strings to strings")
    for key in UNSUPPORTED_RUNTIME_KEYS:
        if runtime.get(key):
            raise CNIError(
                ErrorCode.UNSUPPORTED_FIELD,
                f"unsupported field runtimeConfig.{key}={jsoncodec.dumps(runtime[key])[:200]}: "
                "aws-cni gives pods addresses and MACs of its own (VPC secondary IPs), "
                "it cannot honour a requested one",
            )
    ports = runtime.get("portMappings")
    if ports is not None and not isinstance(ports, list):
        raise _config_error("runtimeConfig.portMappings must be a list")
    return annotations, ports


def _valid_attachments(raw: dict[str, object]) -> tuple[tuple[str, str], ...] | None:
    value = raw.get(VALID_ATTACHMENTS_KEY)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _config_error(f"{VALID_ATTACHMENTS_KEY} must be a list of {{containerID, ifname}} objects")
    out = []
    for item in value:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("containerID"), str)
            and isinstance(item.get("ifname"), str)
        ):
            raise _config_error(f"{VALID_ATTACHMENTS_KEY}: every entry needs string containerID and ifname")
        out.append((item["containerID"], item["ifname"]))
    return tuple(out)


def parse_netconf(raw: dict[str, object]) -> NetConf:
    """Validate ``raw`` (a decoded stdin object); raises :class:`CNIError` with the spec's code."""
    cni_version = versions.negotiate(raw.get("cniVersion"), raw.get("cniVersions"))
    log_file = _string(raw, "pluginLogFile", "")
    if log_file.lower() == "stdout":
        raise _config_error(
            "pluginLogFile cannot be stdout (stdout carries the CNI result): use a file or stderr"
        )
    if log_file.lower() == "stderr":
        log_file = "stderr"  # in any case, as it is checked: never a file of that name in the cwd
    elif log_file and not log_file.startswith("/"):
        raise _config_error(f"pluginLogFile={log_file[:80]!r} must be an absolute path, 'stderr' or empty")
    log_level = _string(raw, "pluginLogLevel", "debug", limit=16).lower() or "debug"
    if log_level not in LOG_LEVELS:
        raise _config_error(f"pluginLogLevel={log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    mode = _string(raw, "podSGEnforcingMode", "strict", limit=16) or "strict"
    if mode not in SG_ENFORCING_MODES:
        raise _config_error(f"podSGEnforcingMode={mode!r} must be strict or standard")
    mtu = raw.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, (int, str))):
        raise _config_error(f"mtu must be a string or an integer, got {type(mtu).__name__}")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _config_error("prevResult must be a JSON object")
    annotations, ports = _runtime_config(raw)
    return NetConf(
        raw=raw,
        name=_name(raw),
        cni_version=cni_version,
        veth_prefix=_veth_prefix(raw),
        mtu=clamp_mtu(mtu),
        pod_sg_enforcing_mode=mode,
        plugin_log_file=log_file,
        plugin_log_level=log_level,
        pod_annotations=annotations,
        port_mappings=ports,
        prev_result=prev,
        cni_socket=_abs_path(raw, "cniSocket", DEFAULT_CNI_SOCKET),
        del_queue_dir=_abs_path(raw, "delQueueDir", DEFAULT_DEL_QUEUE_DIR),
        valid_attachments=_valid_attachments(raw),
    )
