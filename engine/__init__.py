"""imgscale engine: headless data preparation, cluster control and training; no UI, no heavy imports."""

__version__ = "0.1.0"
