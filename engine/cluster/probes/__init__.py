"""Telemetry: the probe set behind the hosts grid, nvidia-smi parsing, exports."""
