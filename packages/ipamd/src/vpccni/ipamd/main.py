"""`aws-k8s-agent`: settings, logging, then the daemon (`vpccni.ipamd.daemon.Daemon`) until SIGTERM.

`aws-k8s-agent --version` prints the version and checks that everything the agent loads loads here
(`vpccni.ipamd.selfcheck`)."""

from __future__ import annotations

import logging
import os
import sys
import time

from vpccni.ipamd.adapters import malloc
from vpccni.ipamd.daemon import Daemon
from vpccni.ipamd.logs import configure_logging
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import SettingsError, load_settings


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        from vpccni.ipamd import selfcheck

        return selfcheck.run()
    started_at = time.monotonic()
    malloc.limit_arenas()  # before any thread exists: arenas are made per thread
    try:
        settings = load_settings(os.environ)
    except SettingsError as err:
        # One message listing every bad variable, so the operator fixes them all at once.
        print(f"aws-k8s-agent: {err}", file=sys.stderr)
        return 1
    plan = WiringPlan.from_settings(settings)
    configure_logging(plan.logging)
    # The libraries' DEBUG output would drown ipamd's own debug log (upstream's default level is DEBUG): the
    # SDKs log every signed request, and pyroute2 formats every netlink message, which took more than half of
    # a CNI request's time.
    for noisy in ("botocore", "boto3", "urllib3", "kubernetes", "pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    return Daemon(settings=settings, plan=plan, started_at=started_at).run()


if __name__ == "__main__":
    sys.exit(main())
