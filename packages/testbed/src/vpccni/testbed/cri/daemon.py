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
then ends containerd by its PID and removes what it left (see `leftovers`). `start()` first sweeps what
harnesses of killed test runs left behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from . import leftovers
from .client import CriClient, CriError
from .config import ContainerdLayout, render_config
from .image import SandboxImage, write_image_layout

log = logging.getLogger(__name__)

REFERENCE_PLUGIN_DIR = Path("/usr/lib/cni")
CRI_NAMESPACE = "k8s.io"


class ContainerdError(RuntimeError):
    """The harness could not start, configure or stop containerd."""


class Containerd:
    """One containerd in a node namespace with all its state under a private directory.

    `base_dir` (default: a new temporary directory) is deleted by `stop()`; `cni_bin_dir` and
    `cni_conf_dir` (default: inside it) are used as given and kept (e.g. where the agent writes its conflist).
    """

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
        self.cgroup_parent = f"/{leftovers.DIR_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self._layout: ContainerdLayout | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

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
        if self._base_dir is None:
            leftovers.sweep_stale(Path(tempfile.gettempdir()))  # what killed runs left behind
        base = self._base_dir or Path(tempfile.mkdtemp(prefix=leftovers.DIR_PREFIX))
        base.mkdir(parents=True, exist_ok=True)
        leftovers.Owner.me(cgroup_parent=self.cgroup_parent).write(base)
        self._layout = layout = ContainerdLayout(
            base=base, cni_bin_override=self._cni_bin_dir, cni_conf_override=self._cni_conf_dir
        )
        try:
            for directory in layout.dirs():
                directory.mkdir(parents=True, exist_ok=True)
            layout.config_file.write_text(render_config(layout, sandbox_image=self._image.reference))
            # Every pod needs the loopback plugin: CRI sets up `lo` through CNI too.
            self.link_reference_plugins("loopback")
            self._log = layout.log_file.open("ab")
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
            leftovers.end_process(self._proc.pid, proc=self._proc)
        leftovers.clean(layout.base, cgroup_parent=self.cgroup_parent)
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

    def install_chain(self, shim: Path, chained: Iterable[str] = ()) -> None:
        """The plugins of vpccni's conflist: aws-cni (the standalone build `shim`), the types chained after it
        that are the same build under another name (egress-cni, beside it), and the reference portmap."""
        self.install_plugin("aws-cni", shim)
        for kind in chained:
            self.install_plugin(kind, shim.parent / kind)
        self.link_reference_plugins("portmap")

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
