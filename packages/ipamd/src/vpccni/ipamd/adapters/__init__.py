"""Real adapters from awsutils, networkutils and the datastore to the ports in `vpccni.ipamd.ports`."""
