"""ipamd's CNI endpoint: serves the ``aws-cni`` shim (ADD, DEL, CHECK, STATUS, GC) on a Unix socket.

``CniEndpoint`` (server) accepts connections, checks the peer, and hands each request with its netns fd to
``CniService``, which allocates through a ``PodAddressAllocator`` and wires through a ``PodNetwork``
(``ports``). ``drain_del_queue`` finishes the DELs the shim queued while ipamd was down.
"""
