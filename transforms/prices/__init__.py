"""Prices: oracle feeds, validation and the composite price."""
