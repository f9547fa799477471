"""Where ipamd's files are, for the CLI, which runs either in the aws-node container or on the host."""

from __future__ import annotations

from vpccni.ipamd.settings import Settings
from vpccni.ipamd.settings_registry import BY_NAME

# The container's default conflist directory (/host/etc/cni/net.d) is /etc/cni/net.d seen from the host.
DEFAULT_CONFLIST_DIRS = ("/etc/cni/net.d", "/host/etc/cni/net.d")


def conflist_dirs(settings: Settings) -> tuple[str, ...]:
    """HOST_CNI_CONFDIR_PATH when it was set, else both places the default one can be seen from."""
    if settings.host_cni_confdir_path != BY_NAME["HOST_CNI_CONFDIR_PATH"].default:
        return (settings.host_cni_confdir_path,)
    return DEFAULT_CONFLIST_DIRS
