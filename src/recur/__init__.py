"""Recur: open-source subscription billing."""
