"""`nox -s chaos`: the reliability suite. Real `aws-k8s-agent` processes and real `aws-cni` shims on testbed
nodes, attacked with SIGKILLs at chosen moments, hostile CNI input and socket frames, idle and slow local
clients, EC2/IMDS/API-server faults, and (`--soak`) an hour of churn; every invariant is checked from the
outside (EC2, the checkpoint file, links and rules in the node namespace, the datastore through
introspection), never by trusting the agent's own word. Results go to `bench/results/reliability.json`.
"""
