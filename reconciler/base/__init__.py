"""Layer 0: what every other layer may use and none of them owns.

The clock (`clock`), the secret registry and redaction (`redact`), loggers (`logs`),
named crash points for the crash trials (`crashpoints`). Standard library (and
structlog for `logs`) only; the pure `core` layer uses none of it: ids and times
arrive there as arguments.
"""
