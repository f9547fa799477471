"""Security groups for pods (ENABLE_POD_ENI): branch-ENI pods beside the datastore's.

The VPC resource controller gives each pod a `SecurityGroupPolicy` selects a branch ENI on the node's trunk
ENI and writes it into the pod's `vpc.amazonaws.com/pod-eni` annotation; ipamd wires the pod through it
(`vpccni.networkutils.vlan`). The datastore never sees those addresses: `lookup` reads the annotation,
`attachments` records the wired pods (in the shared checkpoint), `cni` is what the CNI service asks first,
`trunk` finds the trunk and asks the controller for one (CNINode `SecurityGroupsForPods`), `restore`
cleans up after pods deleted while ipamd was down.
"""
