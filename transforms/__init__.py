"""Beam transforms and the pure functions they wrap."""
