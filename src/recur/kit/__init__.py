"""Shared code that knows nothing of billing."""
