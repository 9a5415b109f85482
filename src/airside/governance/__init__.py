"""Governance: who may do what, for which purpose, and the record that they did."""
