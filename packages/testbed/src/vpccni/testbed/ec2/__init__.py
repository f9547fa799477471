"""The testbed's EC2: moto in server mode behind a fidelity layer that adds what moto lacks."""
