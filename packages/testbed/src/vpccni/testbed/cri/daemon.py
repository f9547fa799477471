"""A private containerd running inside a testbed node's network namespace, as the real CNI client.

    with Containerd(netns_path=node.netns_path) as containerd:
        containerd.link_reference_plugins("portmap")
        containerd.write_conflist("10-aws.conflist", conflist)
        containerd.wait_network_ready()
        with containerd.client() as cri:
            sandbox_id = cri.run_pod(PodSpec(name="web"))

It is started with `nsenter --net=<node netns>`, not `ip netns exec`: the latter also gives the process a
private mount namespace with a fresh /sys, where the cgroup v1 hierarchies are missing and runc cannot create
any container (checked on this machine). With `nsenter --net` only the network namespace changes, so the pod
netns mounts containerd makes under its state dir are visible to the test (probes enter them by path).

`stop()` removes every sandbox through CRI first (so the plugin sees its DELs, as when kubelet drains a node),
then ends containerd by its PID, and removes what it left: its shims and pod processes (found by this
instance's socket path and cgroup parent, each ended by PID), mounts under its directory, the directory,
its cgroups, and /run/containerd when this harness created it and it is empty.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from .client import CriClient, CriError
from .config import ContainerdLayout, render_config
from .image import SandboxImage, write_image_layout

log = logging.getLogger(__name__)

REFERENCE_PLUGIN_DIR = Path("/usr/lib/cni")
CRI_NAMESPACE = "k8s.io"
# containerd 1.6 puts shim sockets here whatever its config says.
SHIM_SOCKET_DIR = Path("/run/containerd/s")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ContainerdError(RuntimeError):
    """The harness could not start, configure or stop containerd."""


class Containerd:
    """One containerd in a node namespace with all its state under a private directory."""

    def __init__(
        self,
        *,
        netns_path: str | Path,
        base_dir: Path | None = None,
        cni_bin_dir: Path | None = None,
        cni_conf_dir: Path | None = None,
        image: SandboxImage | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._netns_path = Path(netns_path)
        self._base_dir = base_dir
        self._cni_bin_dir = cni_bin_dir
        self._cni_conf_dir = cni_conf_dir
        self._image = image or SandboxImage()
        self._start_timeout = start_timeout
        suffix = uuid.uuid4().hex[:10]
        self.cgroup_parent = f"/vpccni-cri-{os.getpid()}-{suffix}"
        self._layout: ContainerdLayout | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._made_run_dirs: list[Path] = []

    @property
    def layout(self) -> ContainerdLayout:
        if self._layout is None:
            raise ContainerdError("containerd is not started: call start() first")
        return self._layout

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def socket(self) -> Path:
        return self.layout.socket

    def client(self, *, timeout: float = 60.0) -> CriClient:
        """A CRI client for this containerd; its pods go under this harness's cgroup parent."""
        return CriClient(socket=self.socket, cgroup_parent=self.cgroup_parent, timeout=timeout)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Containerd:
        """Write the config, start containerd in the node namespace, wait for CRI, import the image."""
        if self._proc is not None:
            raise ContainerdError("containerd is already started")
        if not self._netns_path.exists():
            raise ContainerdError(
                f"network namespace {self._netns_path} does not exist: create the node first"
            )
        if shutil.which("containerd") is None or shutil.which("nsenter") is None:
            raise ContainerdError(
                "containerd and nsenter are needed: apt-get install containerd runc util-linux"
            )
        base = self._base_dir or Path(tempfile.mkdtemp(prefix="vpccni-cri-"))
        self._layout = layout = ContainerdLayout(
            base=base, cni_bin_override=self._cni_bin_dir, cni_conf_override=self._cni_conf_dir
        )
        for directory in layout.dirs():
            directory.mkdir(parents=True, exist_ok=True)
        self._made_run_dirs = [d for d in (SHIM_SOCKET_DIR.parent, SHIM_SOCKET_DIR) if not d.exists()]
        layout.config_file.write_text(render_config(layout, sandbox_image=self._image.reference))
        # Every pod needs the loopback plugin: CRI sets up `lo` through CNI too.
        self.link_reference_plugins("loopback")
        self._log = layout.log_file.open("ab")
        try:
            self._proc = subprocess.Popen(
                ["nsenter", f"--net={self._netns_path}", "containerd", "--config", str(layout.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to the test run must not kill it before stop() runs
            )
            log.info("containerd pid %d in %s, state under %s", self._proc.pid, self._netns_path, base)
            self._wait_ready()
            self.import_image()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove every sandbox, end containerd by PID, and clean up all it left behind. Idempotent."""
        if self._layout is None:
            return
        layout = self._layout
        if self._proc is not None and self._proc.poll() is None:
            self._remove_all_sandboxes()
            self._end(self._proc.pid, proc=self._proc)
        for pid in self._leftover_pids(layout):
            log.warning("ending leftover process %d of containerd %s", pid, layout.socket)
            self._end(pid)
        _unmount_under(layout.base)
        shutil.rmtree(layout.base, ignore_errors=True)
        _remove_cgroups(self.cgroup_parent)
        for directory in reversed(self._made_run_dirs):
            with suppress(OSError):
                directory.rmdir()  # only when empty: another containerd may use it meanwhile
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None
        self._layout = None

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- images, plugins, network config ---------------------------------------------------------------

    def import_image(self) -> None:
        """Build the sandbox image and import it into the CRI namespace (containerd would try to pull it)."""
        tar = write_image_layout(self._image, self.layout.base / "sandbox-image.tar")
        self._ctr("images", "import", "--all-platforms", str(tar))
        tar.unlink()

    def link_reference_plugins(self, *names: str) -> None:
        """Symlink reference plugins (`/usr/lib/cni/<name>`: bridge, host-local, portmap...) into bin_dir."""
        for name in names:
            source = REFERENCE_PLUGIN_DIR / name
            if not source.exists():
                raise ContainerdError(
                    f"reference CNI plugin {source} is missing: apt-get install containernetworking-plugins"
                )
            self.install_plugin(name, source)

    def install_plugin(self, name: str, executable: Path) -> Path:
        """Make `executable` available to containerd as CNI plugin `name` (a symlink in bin_dir)."""
        target = self.layout.cni_bin / name
        with suppress(FileNotFoundError):
            target.unlink()
        target.symlink_to(executable.resolve())
        return target

    def write_conflist(self, filename: str, conflist: Mapping[str, Any]) -> Path:
        """Write a network config into conf_dir in one step (CRI watches the dir and loads the first file)."""
        if not filename.endswith((".conflist", ".conf", ".json")):
            raise ValueError(f"{filename}: CRI only loads .conflist, .conf and .json files")
        target = self.layout.cni_conf / filename
        tmp = target.with_name(f".{filename}.tmp")
        tmp.write_text(json.dumps(conflist, indent=2))
        tmp.replace(target)
        return target

    def wait_network_ready(self, *, network: str | None = None, timeout: float = 20.0) -> None:
        """Wait until CRI reports NetworkReady and, when `network` is given, has loaded the network of that
        name (CRI reloads conf_dir on change, so this is how a test knows a rewritten config is in use)."""
        deadline = time.monotonic() + timeout
        with self.client(timeout=5.0) as cri:
            while True:
                if cri.conditions().get("NetworkReady") and (
                    network is None or network in cri.cni_networks()
                ):
                    return
                if time.monotonic() > deadline:
                    wanted = f"network {network!r}" if network else "a network config"
                    raise ContainerdError(
                        f"CRI did not load {wanted} from {self.layout.cni_conf} within {timeout:.0f}s: "
                        "check the file there is valid JSON with a `name` and a `plugins` list "
                        f"(log: {self.layout.log_file})"
                    )
                time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        """The end of containerd's log, for failure messages."""
        try:
            text = self.layout.log_file.read_text(errors="replace")
        except (OSError, ContainerdError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- internals -------------------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        with self.client(timeout=2.0) as cri:
            while True:
                if self._proc.poll() is not None:
                    raise ContainerdError(
                        f"containerd exited with {self._proc.returncode} during start:\n{self.log_tail()}"
                    )
                if self.layout.socket.exists():
                    with suppress(CriError):
                        cri.version()
                        return
                if time.monotonic() > deadline:
                    raise ContainerdError(
                        f"containerd did not answer on {self.layout.socket} within "
                        f"{self._start_timeout:.0f}s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def _ctr(self, *args: str) -> str:
        argv = ["ctr", "--address", str(self.layout.socket), "-n", CRI_NAMESPACE, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise ContainerdError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.returncode}")
        return proc.stdout

    def _remove_all_sandboxes(self) -> None:
        try:
            with self.client(timeout=30.0) as cri:
                for sandbox_id in cri.list_pods():
                    try:
                        cri.stop_pod(sandbox_id)
                        cri.remove_pod(sandbox_id)
                    except CriError as exc:
                        log.warning("could not remove sandbox %s on stop: %s", sandbox_id[:12], exc)
        except CriError as exc:
            log.warning("could not list sandboxes on stop: %s", exc)

    @staticmethod
    def _end(pid: int, *, proc: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if (proc.poll() is not None) if proc is not None else not _alive(pid):
                return
            time.sleep(0.05)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)

    def _leftover_pids(self, layout: ContainerdLayout) -> list[int]:
        """Shims serving this containerd (named by its socket) and processes in this harness's cgroups."""
        pids = set(_pids_with_args(("-address", str(layout.socket))))
        pids |= set(_cgroup_pids(self.cgroup_parent))
        pids.discard(os.getpid())
        return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent reaps it).
    with suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _pids_with_args(pair: tuple[str, str]) -> Iterable[int]:
    """PIDs whose command line holds `pair` as consecutive arguments."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        wanted = [pair[0].encode(), pair[1].encode()]
        if any(args[i : i + 2] == wanted for i in range(len(args) - 1)):
            yield int(entry.name)


def _cgroup_dirs(parent: str) -> list[Path]:
    """This parent's directory in every mounted hierarchy (cgroup v1 has one per controller)."""
    if not CGROUP_ROOT.is_dir():
        return []
    relative = parent.strip("/")
    dirs = [h / relative for h in CGROUP_ROOT.iterdir() if (h / relative).is_dir()]
    if (CGROUP_ROOT / relative).is_dir():  # cgroup v2 unified at the root
        dirs.append(CGROUP_ROOT / relative)
    return dirs


def _cgroup_pids(parent: str) -> Iterable[int]:
    for top in _cgroup_dirs(parent):
        for procs in top.rglob("cgroup.procs"):
            with suppress(OSError, ValueError):
                yield from (int(line) for line in procs.read_text().split())


def _remove_cgroups(parent: str) -> None:
    """rmdir the parent's cgroup tree, deepest first (cgroupfs only removes empty groups, with rmdir)."""
    for top in _cgroup_dirs(parent):
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with suppress(OSError):
                directory.rmdir()
        with suppress(OSError):
            top.rmdir()


def _unmount_under(base: Path) -> None:
    """Lazily unmount every mount point below `base` (overlay rootfs, shm, netns), deepest first."""
    prefix = str(base.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(set(points), key=lambda p: -p.count("/")):
        proc = subprocess.run(["umount", "--lazy", point], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log.warning("could not unmount %s: %s", point, proc.stderr.strip())
