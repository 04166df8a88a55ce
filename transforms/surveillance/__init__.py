"""Market surveillance: wash trading and rug pulls."""
