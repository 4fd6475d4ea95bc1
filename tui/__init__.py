"""imgscale-tui: the Textual console over the engine."""
