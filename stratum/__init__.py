"""Stratum CDP: shared infrastructure (settings, database, queue) and the `stratum` CLI."""

__version__ = "0.1.0"
