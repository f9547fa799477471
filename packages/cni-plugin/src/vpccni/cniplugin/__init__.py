"""vpccni.cniplugin: the aws-cni CNI plugin: CNI protocol and a thin standard-library shim."""
