"""The operator CLI `vpccni`: ENIs and pods from introspection, max-pods, doctor, support bundle."""
