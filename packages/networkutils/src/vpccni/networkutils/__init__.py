"""vpccni.networkutils: host network and pod wiring for the VPC CNI (netlink, iptables, nftables).

Modules: `names`, `tables` (numbers and priorities), `model` + `netlink` + `netns` (the netlink seam), `pod`
(pod wiring), `eni` (secondary ENIs), `config` + `host` + `snat` + `iptables` + `nft` (host network),
`testing` (fakes; tests only). See the package README for the public API.
"""
