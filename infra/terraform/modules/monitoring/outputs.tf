output "alert_policy_ids" {
  description = "Alert policy name -> id."
  value = {
    system_lag     = google_monitoring_alert_policy.system_lag.id
    data_freshness = google_monitoring_alert_policy.data_freshness.id
    dead_letters   = google_monitoring_alert_policy.dead_letters.id
    job_failed     = google_monitoring_alert_policy.job_failed.id
  }
}

output "slo_ids" {
  description = "SLO name -> id."
  value = {
    freshness  = google_monitoring_slo.freshness.id
    system_lag = google_monitoring_slo.system_lag.id
  }
}
