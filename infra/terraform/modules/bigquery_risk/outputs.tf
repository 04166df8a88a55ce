output "dataset_id" {
  description = "Dataset id (`risk`)."
  value       = google_bigquery_dataset.risk.dataset_id
}

output "dataset_resource_id" {
  description = "Full dataset id, projects/P/datasets/D."
  value       = google_bigquery_dataset.risk.id
}

output "table_ids" {
  description = "Table name -> full table id."
  value       = { for name, table in google_bigquery_table.table : name => table.id }
}

output "materialized_view_ids" {
  description = "Materialized view name -> full table id."
  value = {
    recent_portfolio_exposures_mv = google_bigquery_table.recent_portfolio_exposures_mv.id
  }
}
