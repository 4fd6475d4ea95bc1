"""Hosts, transports (local, SSH), probes, launcher and supervision."""
