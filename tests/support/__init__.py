"""Support code shared by tests: fakes, scripted models, stand-in servers."""
