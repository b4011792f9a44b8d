"""API gateway: the one public entry. Keys and tenants, rate limits, request ids, idempotency."""
