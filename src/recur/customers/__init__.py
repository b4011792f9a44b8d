"""Customer Information Service: profiles, customer numbers, billing history."""
