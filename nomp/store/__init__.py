"""Redis: every key name, and the writers that use them."""
