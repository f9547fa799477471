"""vpccni.networkutils: host network and pod wiring for the VPC CNI (netlink, iptables, nftables)."""
