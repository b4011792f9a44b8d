"""Payment Gateway Service: payment methods, payments, refunds, gateway adapters."""
