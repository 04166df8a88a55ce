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

output "view_ids" {
  description = "Plain view name (the stem of its sql/views file) -> full table id."
  value = merge(
    { for name, view in google_bigquery_table.view : name => view.id },
    { for name, view in google_bigquery_table.view_on_view : name => view.id },
  )
}
