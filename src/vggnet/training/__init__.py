"""Training: configuration, setup, the resumable state, the loop, recipe hooks, history."""
