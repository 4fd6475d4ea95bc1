"""Data preparation stages: disk, extract, filter, split, list, pack, place; each run on a workspace by one runner."""
