"""One router per area of the API (docs/api.md)."""
