"""Detached processes and their supervision: records, the wrapper, watcher, supervisor, faults, kill."""
