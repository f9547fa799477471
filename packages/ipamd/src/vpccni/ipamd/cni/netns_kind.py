"""What a file descriptor received as ``CNI_NETNS`` really is: a pod's network namespace, the host's own
(ipamd's), or anything else (another kind of namespace, a regular file, a FIFO...)."""

from __future__ import annotations

import enum
import fcntl
import os

NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file (Linux >= 4.11): the namespace's CLONE_* type
CLONE_NEWNET = 0x40000000


class NetnsKind(enum.Enum):
    POD = "pod"
    HOST = "host"
    OTHER = "other"


def classify_netns(fd: int) -> NetnsKind:
    try:
        if fcntl.ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET:
            return NetnsKind.OTHER
        ours = os.stat("/proc/thread-self/ns/net")
        theirs = os.fstat(fd)
    except OSError:  # ENOTTY: not a namespace at all
        return NetnsKind.OTHER
    return NetnsKind.HOST if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino) else NetnsKind.POD
