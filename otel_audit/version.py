"""The package version, in one place (the InstrumentationScope of every record carries it)."""

__version__ = "0.1.0"
