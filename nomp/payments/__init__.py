"""Payments: block maturity, reward schemes, balances and payouts."""
