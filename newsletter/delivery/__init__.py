"""Delivery: the ledger and its transports."""
