"""Data preparation stages: disk, extract, filter, split, list, pack, place."""
