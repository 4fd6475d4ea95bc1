"""Benchmarks and measurements: scaling sweeps, doctor, scaling model."""
