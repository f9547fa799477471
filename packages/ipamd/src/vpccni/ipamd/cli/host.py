"""What `vpccni doctor` and `vpccni support-bundle` read from the node, behind narrow seams.

Each seam has one real adapter here and a stateful fake in `vpccni.ipamd.cli.testing`, so the checks and the
bundle are tested without touching the machine. Nothing here writes to the host.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class FileInfo:
    mode: int  # permission bits only
    uid: int
    gid: int
    is_socket: bool


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, kw_only=True)
class HttpReply:
    status: int
    body: str


class HostReader(Protocol):
    """Read-only access to the node: files, file metadata, commands, the environment."""

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it is missing or unreadable."""
        ...

    def stat(self, path: str) -> FileInfo | None: ...

    def list_dir(self, path: str) -> list[str]:
        """Names in a directory ([] when it does not exist)."""
        ...

    def run(self, argv: list[str]) -> CommandResult | None:
        """Run a read-only command; None when the program is not installed."""
        ...

    def environ(self) -> Mapping[str, str]: ...


class HttpClient(Protocol):
    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 2.0
    ) -> HttpReply:
        """Raises OSError when nothing answers (refused, timed out, unreachable)."""
        ...


class Ec2DryRun(Protocol):
    def dry_run(self, action: str, params: Mapping[str, Any]) -> str:
        """Call `action` with DryRun=True: "allowed", "denied" (UnauthorizedOperation) or "error: <why>"."""
        ...


class LocalHost:
    """The real node."""

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return FileInfo(
            mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, is_socket=stat.S_ISSOCK(st.st_mode)
        )

    def list_dir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return []

    def run(self, argv: list[str]) -> CommandResult | None:
        if shutil.which(argv[0]) is None:
            return None
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return CommandResult(returncode=-1, stdout="", stderr=str(exc))
        return CommandResult(returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)

    def environ(self) -> Mapping[str, str]:
        return dict(os.environ)


class UrllibHttp:
    """The real HTTP client; proxies are ignored (IMDS and the local endpoints must be reached directly)."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 2.0
    ) -> HttpReply:
        req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
        try:
            with self._opener.open(req, timeout=timeout_s) as resp:
                return HttpReply(status=resp.status, body=resp.read().decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            return HttpReply(status=exc.code, body=exc.read().decode(errors="replace"))
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise OSError(str(reason)) from None


class Boto3DryRun:
    """The real EC2 probe (boto3 client built lazily with the node's credentials and AWS_EC2_ENDPOINT)."""

    def __init__(self, *, region: str, endpoint_url: str | None = None) -> None:
        self._region = region
        self._endpoint = endpoint_url or None
        self._client: Any = None

    def dry_run(self, action: str, params: Mapping[str, Any]) -> str:
        import boto3
        import botocore.config
        import botocore.exceptions

        if self._client is None:
            config = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=5)
            self._client = boto3.client(
                "ec2", region_name=self._region, endpoint_url=self._endpoint, config=config
            )
        method = getattr(self._client, _snake(action))
        try:
            method(DryRun=True, **params)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "DryRunOperation":
                return "allowed"
            if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
                return "denied"
            return f"error: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            return f"error: {exc}"
        return "allowed"  # the endpoint ignored DryRun; the call itself succeeded


def _snake(action: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in action).lstrip("_")
