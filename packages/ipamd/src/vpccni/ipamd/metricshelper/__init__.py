"""cni-metrics-helper: cluster-wide VPC CNI metrics to CloudWatch and Prometheus (a Deployment)."""
