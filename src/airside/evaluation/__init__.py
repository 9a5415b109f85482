"""Metrics and reports; reads datasets, calls services and vision, never the store."""
