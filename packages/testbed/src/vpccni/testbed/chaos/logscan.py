"""Python tracebacks written to log files since a mark: the agent's JSON log (a logged exception carries its
traceback in `error`), its stderr, the plugin log. A traceback means an exception no code path expected."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MARKER = "Traceback (most recent call last)"


@dataclass(frozen=True, kw_only=True)
class Traceback:
    file: str
    summary: str  # the log message (or the line) and the exception's last line

    def __str__(self) -> str:
        return f"{Path(self.file).name}: {self.summary}"


def summarize(line: str) -> str:
    """One line for a log line holding a traceback: its message and the exception that ended it."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if isinstance(entry, dict):
        text = str(entry.get("error") or entry.get("traceback") or "")
        last = text.strip().splitlines()[-1] if text.strip() else ""
        return f"{entry.get('msg', '')} -> {last}"[:300]
    return line.strip()[:300]


def tracebacks_in(text: str, *, file: str) -> list[Traceback]:
    """Tracebacks in a chunk of log text: one per JSON line holding one, or one per plain-text traceback
    (its last line, the exception, summarizes it)."""
    out: list[Traceback] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if MARKER not in line:
            continue
        if line.lstrip().startswith("{"):
            out.append(Traceback(file=file, summary=summarize(line)))
            continue
        # A plain traceback: the exception is the first line after it that is not indented.
        end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j][0].isspace()), None)
        out.append(
            Traceback(file=file, summary=lines[end].strip()[:300] if end is not None else line.strip())
        )
    return out


class LogScanner:
    """`mark()` remembers where each file ends; `since_mark()` returns the tracebacks written after it."""

    def __init__(self, files: Iterable[Path]) -> None:
        self._files = list(files)
        self._offsets: dict[Path, int] = {}

    def mark(self) -> None:
        self._offsets = {p: (p.stat().st_size if p.exists() else 0) for p in self._files}

    def since_mark(self) -> list[Traceback]:
        out: list[Traceback] = []
        for path in self._files:
            if not path.exists():
                continue
            start = self._offsets.get(path, 0)
            with open(path, "rb") as f:
                if path.stat().st_size < start:  # rotated or truncated: read it all
                    start = 0
                f.seek(start)
                text = f.read().decode(errors="replace")
            out += tracebacks_in(text, file=str(path))
        return out
