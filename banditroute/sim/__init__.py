"""The embedded simulator and the demo that runs the main job on it."""
