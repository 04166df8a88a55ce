"""The edges every run mode shares: files, Pub/Sub and BigQuery."""
