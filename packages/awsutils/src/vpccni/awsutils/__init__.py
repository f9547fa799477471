"""vpccni.awsutils: IMDS client, EC2 operations, instance limits and ENI lifecycle for the VPC CNI."""
