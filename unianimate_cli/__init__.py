"""unianimate: animate the person in a photo with the moves of a driving video."""

__version__ = "0.1.0.dev0"
