"""Running the iptables/nft command-line tools, optionally inside a named network namespace."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class CommandError(RuntimeError):
    """A networking tool failed; carries its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(
            f"{' '.join(argv)} exited {returncode}: {stderr.strip() or '(no output)'}; check that "
            "the tool is installed and that the process has CAP_NET_ADMIN"
        )
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


class ToolRunner:
    """Runs a tool in the current namespace, or in `netns` (a name under /run/netns) via `ip netns exec`.

    The netns form exists for tests and the testbed, so a machine's own tables are never touched.
    """

    def __init__(self, *, netns: str | None = None, run: Runner = subprocess.run) -> None:
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._run = run

    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
        full = [*self._prefix, *argv]
        log.debug("running %s", full)
        try:
            done = self._run(full, input=stdin, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise CommandError(full, 127, f"{exc.filename or full[0]} not found") from exc
        if check and done.returncode != 0:
            raise CommandError(full, done.returncode, done.stderr)
        return str(done.stdout)

    def try_run(self, argv: Sequence[str], *, stdin: str | None = None) -> tuple[int, str, str]:
        """Run without raising: (returncode, stdout, stderr)."""
        full = [*self._prefix, *argv]
        done = self._run(full, input=stdin, capture_output=True, text=True, check=False)
        return done.returncode, str(done.stdout), str(done.stderr)
