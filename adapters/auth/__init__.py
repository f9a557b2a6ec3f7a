"""Authentication: verifying bearer tokens into principals."""
