"""The package version (one place: ``pyproject.toml`` repeats it, and a test holds them equal)."""

__version__ = "0.1.0"
