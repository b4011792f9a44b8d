"""Subscription Manager Service: catalog, subscriptions, billing engine."""
