"""``aws-cni``: the CNI plugin executable, a thin shim in front of ipamd.

It validates what the runtime sent, answers VERSION itself and forwards ADD, DEL, CHECK, STATUS and GC
to ipamd's CNI endpoint with the pod's network namespace as a file descriptor (see ``wire``). It runs
once per pod operation under ``python3 -I -S``, so the hot path loads nothing beyond what the interpreter
has at start, C modules (``posix``, ``_socket``, ``_json``) and this package's small modules: no ``os``,
``json`` or ``socket``, whose imports alone (~10 ms) took longer than a whole run now does. Error paths
import what they need where they need it.

stdout carries only the result or the error JSON; logs go to ``pluginLogFile`` (stderr when empty).
"""

from __future__ import annotations

import posix
import sys

from vpccni.cniplugin import egress, jsoncodec, versions
from vpccni.cniplugin.environ import CniEnvironment, read_environment
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.netconf import MAX_STDIN_BYTES, NetConf, decode, parse_netconf
from vpccni.cniplugin.pluginlog import PluginLog
from vpccni.cniplugin.version import VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO, TextIO

    from vpccni.cniplugin import wire

ABOUT = f"AWS CNI v{VERSION} (vpccni)"


def _read_stdin(stdin: BinaryIO | None) -> bytes:
    if stdin is None:
        return b""
    return stdin.read(MAX_STDIN_BYTES + 1) or b""


def _print_json(stdout: TextIO, value: object) -> None:
    stdout.write(jsoncodec.dumps(value, separators=(",", ":")) + "\n")
    stdout.flush()


def _version_of(raw: object) -> str:
    """The version to label an error with: the config's own when it is one we know, else the latest."""
    if isinstance(raw, dict):
        value = raw.get("cniVersion")
        try:
            canonical = versions.canonical(value)
        except CNIError:
            return versions.LATEST
        if canonical in versions.SUPPORTED_VERSIONS:
            return canonical
    return versions.LATEST


def _check_verb_allowed(command: str, conf: NetConf) -> None:
    if command == "CHECK" and not versions.allows_check(conf.cni_version):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION, "config version does not allow CHECK (needs >= 0.4.0)"
        )
    if command in ("STATUS", "GC") and not versions.allows_status_and_gc(conf.cni_version):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION, f"config version does not allow {command} (needs >= 1.1.0)"
        )


def _open_netns(env: CniEnvironment) -> int | None:
    """The pod's netns opened read-only; None for a DEL whose netns is gone, was not given, or is not a
    namespace (DEL must still release the address).

    Opened without blocking (a FIFO as CNI_NETNS would hang ``open``) and checked to be a namespace file:
    a regular file on the filesystem that namespace files live on (nsfs). ipamd checks it is a network
    namespace (``ioctl(NS_GET_NSTYPE)``, which costs the shim an extension module) and not its own.
    """
    if not env.netns:
        return None
    try:
        fd = posix.open(env.netns, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK)
    except FileNotFoundError:
        if env.command == "DEL":
            return None
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
            f"CNI_NETNS={env.netns}: no such file: the pod's network namespace is gone (was the sandbox "
            "removed while it was being set up?)",
        ) from None
    except OSError as exc:
        if env.command == "DEL":
            return None
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"CNI_NETNS={env.netns}: cannot open: {exc.strerror}"
        ) from None
    try:
        ours = posix.stat("/proc/self/ns/net")
        theirs = posix.fstat(fd)
    except OSError:
        return fd
    problem = ""
    if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
        problem = "is the network namespace aws-cni itself runs in (the host's): refusing it"
    elif theirs.st_dev != ours.st_dev or theirs.st_mode & 0o170000 != 0o100000:  # S_IFREG on nsfs
        problem = "is not a namespace file (expected e.g. /var/run/netns/<name> or /proc/<pid>/ns/net)"
    if not problem:
        return fd
    posix.close(fd)
    if env.command == "DEL":
        return None
    raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"CNI_NETNS={env.netns} {problem}")


def _unreachable(
    command: str, exc: wire.WireError, conf: NetConf, request: wire.Request, log: PluginLog
) -> None:
    """What each command does when ipamd cannot be asked (docs/design/architecture.md §2)."""
    if command == "DEL":
        from vpccni.cniplugin import delqueue

        try:
            path = delqueue.enqueue(conf.del_queue_dir, request)
        except OSError as err:
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER,
                f"{exc}; and the DEL could not be queued in {conf.del_queue_dir}: {err}",
            ) from None
        log.info("ipamd unreachable: DEL queued for ipamd to finish at start", reason=str(exc), entry=path)
        return
    if command == "STATUS":
        raise CNIError(ErrorCode.NOT_AVAILABLE, str(exc))
    raise CNIError(ErrorCode.TRY_AGAIN_LATER, str(exc))


def _forward(env: CniEnvironment, conf: NetConf, stdout: TextIO, log: PluginLog) -> None:
    from vpccni.cniplugin import wire  # here: egress-cni's ADD never reaches this, and _socket costs ~0.3 ms

    fd = _open_netns(env) if env.command in ("ADD", "DEL", "CHECK") else None
    timeout = wire.STATUS_TIMEOUT_S if env.command == "STATUS" else wire.DEFAULT_TIMEOUT_S
    request = wire.Request(
        version=VERSION,
        command=env.command,
        container_id=env.container_id,
        ifname=env.ifname,
        netns_path=env.netns,
        has_netns_fd=fd is not None,
        k8s_args=env.args,
        netconf=conf.raw,
        cni_version=conf.cni_version,
        timeout_s=timeout,
    )
    log.debug(
        "forwarding to ipamd", command=env.command, containerID=env.container_id, ifName=env.ifname,
        netns=env.netns, pod=f"{env.args.pod_namespace}/{env.args.pod_name}", socket=conf.cni_socket,
    )  # fmt: skip
    try:
        result = wire.call(conf.cni_socket, request, fd)
    except wire.WireError as exc:
        _unreachable(env.command, exc, conf, request, log)
        return
    finally:
        if fd is not None:
            posix.close(fd)
    if env.command == "ADD":
        if not isinstance(result, dict):
            raise CNIError(ErrorCode.INTERNAL, "ipamd answered ADD without a result object")
        _print_json(stdout, result)
    log.info("done", command=env.command, containerID=env.container_id)


def _egress_answered(env: CniEnvironment, conf: NetConf, stdout: TextIO, log: PluginLog) -> bool:
    """egress-cni: its entry checked, and its ADD answered here when ipamd wired the egress in aws-cni's
    ADD (see ``egress``)."""
    egress.check_entry(conf.raw)
    wired = egress.wired_result(conf.raw, conf.cni_version) if env.command == "ADD" else None
    if wired is None:
        return False
    _print_json(stdout, wired)
    log.info("done: egress wired with aws-cni's ADD", command=env.command, containerID=env.container_id)
    return True


def run(environ: Mapping[str, str], stdin: BinaryIO | None, stdout: TextIO, stderr: TextIO) -> int:
    """One plugin invocation; returns the exit status. Never raises and never prints a traceback."""
    command = environ.get("CNI_COMMAND", "")
    if not command:
        stderr.write(f"{ABOUT}\nCNI protocol versions supported: {', '.join(versions.SUPPORTED_VERSIONS)}\n")
        return 0
    raw: object = None
    log = PluginLog()
    try:
        if command == "VERSION":
            raw = _read_version_request(stdin)
            _print_json(
                stdout,
                {"cniVersion": _version_of(raw), "supportedVersions": list(versions.SUPPORTED_VERSIONS)},
            )
            return 0
        env = read_environment(environ)
        raw = decode(_read_stdin(stdin))
        conf = parse_netconf(raw)
        log = PluginLog(path=conf.plugin_log_file, level=conf.plugin_log_level)
        _check_verb_allowed(env.command, conf)
        if egress.is_egress(conf.raw) and _egress_answered(env, conf, stdout, log):
            return 0
        _forward(env, conf, stdout, log)
        return 0
    except CNIError as err:
        log.error("failed", command=command, code=err.code, error=err.msg)
        _print_json(stdout, err.to_dict(_version_of(raw)))
        return 1
    except Exception as exc:  # the runtime must always get the error JSON, never a traceback
        import traceback

        log.error("internal error", command=command, traceback=traceback.format_exc())
        internal = CNIError(ErrorCode.INTERNAL, f"internal error in aws-cni: {type(exc).__name__}: {exc}")
        _print_json(stdout, internal.to_dict(_version_of(raw)))
        return 1
    finally:
        log.close()


def _read_version_request(stdin: BinaryIO | None) -> object:
    """VERSION's stdin is optional and only tells which version to echo; it can never make VERSION fail."""
    if stdin is None or (hasattr(stdin, "isatty") and stdin.isatty()):
        return None
    try:
        return jsoncodec.loads(_read_stdin(stdin) or b"null")
    except (ValueError, RecursionError):
        return None


def environment() -> dict[str, str]:
    """The process environment decoded as ``os.environ`` decodes it, without importing ``os``."""
    encoding = sys.getfilesystemencoding()
    return {
        key.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
        for key, value in posix.environ.items()
    }


def main(*, skip_teardown: bool = False) -> None:
    """Run once and exit with the status. ``skip_teardown`` (the installed executable) ends the process as
    soon as the output is flushed: the interpreter's own teardown costs ~1 ms and there is nothing left to
    release (every fd is closed, the DEL queue entry is fsynced, stdout and the log are written through)."""
    status = run(environment(), sys.stdin.buffer if sys.stdin else None, sys.stdout, sys.stderr)
    if not skip_teardown:
        sys.exit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the runtime closed our stdout: it did not get the answer
        status = status or 1
    posix._exit(status)


if __name__ == "__main__":
    main()
