"""Data preparation stages: disk, extract, filter, split, list, pack (also over hosts), place; each
works on folders it is given (engine.workspace runs them on a workspace)."""
