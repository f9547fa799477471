"""The CNI execution environment: ``CNI_*`` variables and ``CNI_ARGS``, validated per command."""

from __future__ import annotations

from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.values import FrozenValue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
# Variables the spec requires per command (CNI_PATH is optional for aws-cni: it delegates to no plugin).
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "STATUS": (),
    "GC": (),
    "VERSION": (),
}
MAX_CNI_ARGS = 4096
MAX_ID = 1024
MAX_PATH = 4096
MAX_K8S_VALUE = 253
K8S_KEYS = ("K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")
_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")


def _env_error(name: str, problem: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"{name}: {problem}")


class K8sArgs(FrozenValue):
    """The Kubernetes identity of the pod, from ``CNI_ARGS`` (empty strings when the runtime sent none)."""

    __slots__ = ("pod_infra_container_id", "pod_name", "pod_namespace", "pod_uid")
    pod_name: str
    pod_namespace: str
    pod_infra_container_id: str
    pod_uid: str

    def __init__(
        self,
        *,
        pod_name: str = "",
        pod_namespace: str = "",
        pod_infra_container_id: str = "",
        pod_uid: str = "",
    ) -> None:
        self._set("pod_name", pod_name)
        self._set("pod_namespace", pod_namespace)
        self._set("pod_infra_container_id", pod_infra_container_id)
        self._set("pod_uid", pod_uid)

    def to_dict(self) -> dict[str, str]:
        return {
            "K8S_POD_NAME": self.pod_name,
            "K8S_POD_NAMESPACE": self.pod_namespace,
            "K8S_POD_INFRA_CONTAINER_ID": self.pod_infra_container_id,
            "K8S_POD_UID": self.pod_uid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> K8sArgs:
        values = {k: data.get(k, "") for k in K8S_KEYS}
        for key, value in values.items():
            if not isinstance(value, str) or not _printable(value) or len(value) > MAX_K8S_VALUE:
                raise _env_error(
                    "CNI_ARGS", f"{key} must be a printable string of at most {MAX_K8S_VALUE} chars"
                )
        return cls(
            pod_name=str(values["K8S_POD_NAME"]),
            pod_namespace=str(values["K8S_POD_NAMESPACE"]),
            pod_infra_container_id=str(values["K8S_POD_INFRA_CONTAINER_ID"]),
            pod_uid=str(values["K8S_POD_UID"]),
        )


class CniEnvironment(FrozenValue):
    """What the runtime told the plugin through its environment."""

    __slots__ = ("args", "command", "container_id", "ifname", "netns", "path")
    command: str
    container_id: str
    netns: str
    ifname: str
    args: K8sArgs
    path: str

    def __init__(
        self, *, command: str, container_id: str = "", netns: str = "", ifname: str = "",
        args: K8sArgs | None = None, path: str = "",
    ) -> None:  # fmt: skip
        self._set("command", command)
        self._set("container_id", container_id)
        self._set("netns", netns)
        self._set("ifname", ifname)
        self._set("args", args if args is not None else K8sArgs())
        self._set("path", path)


def _printable(value: str) -> bool:
    return value.isprintable()


def validate_container_id(value: str) -> None:
    if not value or len(value) > MAX_ID or value[0] not in _ID_FIRST or not set(value) <= _ID_REST:
        raise _env_error(
            "CNI_CONTAINERID",
            f"invalid container ID {value[:80]!r}: it must start with a letter or digit, "
            f"continue with letters, digits, '_', '.' or '-' and be at most {MAX_ID} characters",
        )


def validate_ifname(value: str) -> None:
    # The kernel's rules (IFNAMSIZ): at most 15 bytes, not "." or "..", no '/', ':' or whitespace.
    bad = not value or len(value.encode()) > 15 or value in (".", "..")
    if bad or any(c in "/:" or c.isspace() or not c.isprintable() for c in value):
        raise _env_error(
            "CNI_IFNAME",
            f"invalid interface name {value[:40]!r}: 1-15 bytes, not '.' or '..', no '/', ':' or whitespace",
        )


def parse_cni_args(text: str) -> K8sArgs:
    """``"IgnoreUnknown=1;K8S_POD_NAME=web;..."`` -> :class:`K8sArgs` (unknown keys need IgnoreUnknown)."""
    if len(text) > MAX_CNI_ARGS:
        raise _env_error("CNI_ARGS", f"longer than {MAX_CNI_ARGS} characters")
    pairs: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _env_error("CNI_ARGS", f"invalid pair {item[:80]!r}: expected KEY=VALUE separated by ';'")
        pairs[key] = value
    ignore = pairs.pop("IgnoreUnknown", "false")
    if ignore.lower() not in ("1", "true", "0", "false"):
        raise _env_error(
            "CNI_ARGS", f"IgnoreUnknown={ignore[:20]!r} is not a boolean (use 1/true or 0/false)"
        )
    unknown = sorted(k for k in pairs if k not in K8S_KEYS)
    if unknown and ignore.lower() not in ("1", "true"):
        raise _env_error(
            "CNI_ARGS", f"unknown variable {unknown[0][:40]!r} (the runtime can set IgnoreUnknown=1)"
        )
    return K8sArgs.from_dict(pairs)


def read_environment(environ: Mapping[str, str]) -> CniEnvironment:
    """Validate the variables ``CNI_COMMAND`` needs; raises :class:`CNIError` code 4 naming the variable."""
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise _env_error(
            "CNI_COMMAND", f"unknown command {command[:20]!r}: expected one of {', '.join(COMMANDS)}"
        )
    missing = [name for name in REQUIRED[command] if not environ.get(name)]
    if missing:
        raise _env_error(", ".join(missing), f"required by {command} but missing or empty")
    for name in ("CNI_NETNS", "CNI_PATH"):
        if len(environ.get(name, "")) > MAX_PATH or "\0" in environ.get(name, ""):
            raise _env_error(name, f"longer than {MAX_PATH} characters or contains NUL")
    netns = environ.get("CNI_NETNS", "")
    if netns and not netns.startswith("/"):
        raise _env_error("CNI_NETNS", f"{netns[:80]!r} is not an absolute path")
    container_id = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK"):
        validate_container_id(container_id)
        validate_ifname(ifname)
    return CniEnvironment(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=environ.get("CNI_PATH", ""),
    )
