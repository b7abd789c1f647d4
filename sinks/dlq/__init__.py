"""Tools for the dead-letter topic: ``dlq inspect`` (what failed and why) and ``dlq redrive``."""
