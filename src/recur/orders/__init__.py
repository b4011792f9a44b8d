"""Order Processing Service: orders, their numbers and their invoices."""
