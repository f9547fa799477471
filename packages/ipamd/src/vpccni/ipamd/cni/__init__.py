"""ipamd's CNI endpoint: serves the ``aws-cni`` shim (ADD, DEL, CHECK, STATUS, GC) on a Unix socket.

``CniEndpoint`` (server) accepts connections, checks the peer, and hands each request with its netns fd to
``CniService``, which allocates through a ``PodAddressAllocator`` and wires through a ``PodNetwork``
(``ports``). ``drain_del_queue`` finishes the DELs the shim queued while ipamd was down.

Wiring it in aws-k8s-agent (after node init restored the checkpoint and the allocator is ready: the DEL
queue is drained at ``start()`` and a DEL for a pod the datastore does not know yet would find nothing)::

    host = open_netlink()
    service = CniService(
        allocator=allocator,                                    # vpccni.ipamd.allocator.Allocator
        network=PodWiring(host=host, namespaces=ThreadNetnsNetlink()),
        host_rules=NetlinkHostPodRules(host),
    )
    endpoint = CniEndpoint(service=service, settings=EndpointSettings(socket_path=..., del_queue_dir=...))
    endpoint.start()   # ... endpoint.stop() on shutdown
"""
