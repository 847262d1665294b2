"""Infrastructure shared by pipeline/, model/ and train/: atomic file writes and the typed
config loader. Imports nothing else of the project, so every package may depend on it."""
