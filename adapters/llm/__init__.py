"""Model access through Simon Willison's llm library and its plugins."""
