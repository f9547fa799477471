"""Installing vpccni on a node, as upstream's aws-node containers do.

- `init`: the init container (sysctls, reference CNI plugins and the aws-cni shim into the host CNI bin dir);
- `entrypoint`: the main container (validate settings, install the shim, run aws-k8s-agent, wait until it is
  healthy, then write `10-aws.conflist`);
- `probe`: a grpc-health-probe compatible liveness/readiness command;
- `conflist`, `files`, `sysctl`, `netdev`, `health`, `maxpods`: the pieces they are made of.
"""
