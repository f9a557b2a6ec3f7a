"""Configuration, composition root, logging and the command line."""
