"""Margin: health, zones, liquidation prices, margin events and alerts."""
