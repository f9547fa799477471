"""When a chaos round kills the agent, and how the kill is made to land there.

`schedule` spreads the targeted moments over the rounds (every one at least once when there are rounds
enough), the rest at random times. The triggers watch from outside: inotify on the state directory for the
checkpoint's temporary file and on the DEL queue for an acknowledged entry, the testbed's EC2 for an
AttachNetworkInterface still being served. Each says whether the kill really landed in its moment.
"""

from __future__ import annotations

import enum
import random

# Share of the rounds each targeted moment gets (the remainder is random moments).
SHARES = {
    "checkpoint-write": 0.2,
    "eni-attach": 0.14,
    "del-queue-drain": 0.14,
    "startup": 0.1,
    "reboot": 0.04,
}


class Moment(enum.Enum):
    RANDOM = "random"
    CHECKPOINT_WRITE = "checkpoint-write"  # between the temp file's creation and its rename
    ENI_ATTACH = "eni-attach"  # while EC2 serves the agent's AttachNetworkInterface
    DEL_QUEUE_DRAIN = "del-queue-drain"  # after the first queued DEL is finished, before the last
    STARTUP = "startup"  # node init, before the CNI socket serves
    REBOOT = "reboot"  # SIGKILL, then every pod's network namespace is gone


def schedule(rounds: int, seed: int) -> list[Moment]:
    """`rounds` moments in a shuffled order: each targeted one max(1, share * rounds) times while rounds
    remain (in the order of SHARES), random moments for the rest."""
    out: list[Moment] = []
    for value, share in SHARES.items():
        want = max(1, round(share * rounds))
        out += [Moment(value)] * min(want, rounds - len(out))
    out += [Moment.RANDOM] * (rounds - len(out))
    random.Random(seed).shuffle(out)
    return out
