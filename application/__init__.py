"""Use cases and the ports they drive. Depends on domain/ only."""
