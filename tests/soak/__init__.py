"""Soak and failure-run harness (not part of the quick suite except its bounded variants)."""
