"""Stateful fakes for the CLI's seams (a node as dictionaries). Product code never imports this module."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vpccni.ipamd.cli.host import CommandResult, FileInfo, HttpReply
from vpccni.ipamd.cli.introspect import IntrospectionError, IntrospectionNotFound


@dataclass(kw_only=True)
class FakeHost:
    files: dict[str, str] = field(default_factory=dict)
    stats: dict[str, FileInfo] = field(default_factory=dict)
    commands: dict[tuple[str, ...], CommandResult] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    ran: list[list[str]] = field(default_factory=list)
    read: list[str] = field(default_factory=list)

    def read_text(self, path: str) -> str | None:
        self.read.append(path)
        return self.files.get(path)

    def stat(self, path: str) -> FileInfo | None:
        return self.stats.get(path)

    def list_dir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = {
            p[len(prefix) :].split("/", 1)[0] for p in [*self.files, *self.stats] if p.startswith(prefix)
        }
        return sorted(names)

    def run(self, argv: list[str]) -> CommandResult | None:
        self.ran.append(list(argv))
        return self.commands.get(tuple(argv))

    def environ(self) -> Mapping[str, str]:
        return dict(self.env)

    def set_sysctl(self, key: str, value: str) -> None:
        self.files[posixpath.join("/proc/sys", key.replace(".", "/"))] = value + "\n"


@dataclass(kw_only=True)
class FakeHttp:
    """URL → reply; a URL in `down` raises OSError as an unreachable server does."""

    replies: dict[tuple[str, str], HttpReply] = field(default_factory=dict)
    down: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 2.0
    ) -> HttpReply:
        self.calls.append((method, url, dict(headers or {})))
        if (method, url) in self.down:
            raise OSError(self.down[(method, url)])
        reply = self.replies.get((method, url))
        if reply is None:
            raise OSError(f"connection refused: {url}")
        return reply


@dataclass(kw_only=True)
class FakeEc2:
    """Action → outcome ("allowed", "denied", "error: ..."); unknown actions are allowed."""

    outcomes: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def dry_run(self, action: str, params: Mapping[str, Any]) -> str:
        self.calls.append((action, dict(params)))
        return self.outcomes.get(action, "allowed")


@dataclass(kw_only=True)
class FakeIntrospection:
    docs: dict[str, Any] = field(default_factory=dict)
    unreachable: bool = False

    def get_json(self, path: str) -> Any:
        if self.unreachable:
            raise IntrospectionError(f"cannot read {path}: connection refused")
        if path not in self.docs:
            raise IntrospectionNotFound(f"ipamd answered 404 for {path}")
        return self.docs[path]
