"""Airside: consent-first biometric identity and safety analytics."""

__version__ = "0.1.0"
