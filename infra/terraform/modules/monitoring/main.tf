locals {
  job_filter = "resource.type = \"dataflow_job\" AND resource.labels.job_name = \"${var.job_name}\""

  dead_letter_subscriptions = "resource.labels.subscription_id = one_of(${join(", ", [for s in var.dead_letter_subscriptions : jsonencode(s)])})"
  input_subscriptions       = "resource.labels.subscription_id = one_of(${join(", ", [for s in var.input_subscriptions : jsonencode(s)])})"

  runbook = "Runbook: infra/terraform/README.md (Monitoring). Job: ${var.job_name}."
}

resource "google_monitoring_alert_policy" "system_lag" {
  project               = var.project_id
  display_name          = "defi-risk: Dataflow system lag above ${var.system_lag_threshold_s}s"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "job/system_lag > ${var.system_lag_threshold_s}s"
    condition_threshold {
      filter          = "${local.job_filter} AND metric.type = \"dataflow.googleapis.com/job/system_lag\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.system_lag_threshold_s
      duration        = var.alert_duration
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "Elements wait too long inside the job: scaling, a hot key or a slow sink. ${local.runbook}"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "data_freshness" {
  project               = var.project_id
  display_name          = "defi-risk: data older than ${var.freshness_threshold_s}s"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "job/data_watermark_age > ${var.freshness_threshold_s}s"
    condition_threshold {
      filter          = "${local.job_filter} AND metric.type = \"dataflow.googleapis.com/job/data_watermark_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.freshness_threshold_s
      duration        = var.alert_duration
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "The watermark is behind: risk numbers and alerts are stale (an idle or stuck input, or lag). ${local.runbook}"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "defi-risk: Pub/Sub dead letters"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "messages waiting on a dead-letter subscription"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.dead_letter_subscriptions}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.dead_letter_threshold
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "messages forwarded to a dead-letter topic"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND ${local.input_subscriptions}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    content   = "Messages were not acknowledged after the maximum delivery attempts and went to `<topic>.dead-letter`; read them from `<topic>.dead-letter.sub`. ${local.runbook}"
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "job_failed" {
  project               = var.project_id
  display_name          = "defi-risk: Dataflow job failed"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "job/is_failed"
    condition_threshold {
      filter          = "${local.job_filter} AND metric.type = \"dataflow.googleapis.com/job/is_failed\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "The streaming job failed: no risk numbers, no alerts. Check the job logs, then relaunch with `terraform apply`. ${local.runbook}"
    mime_type = "text/markdown"
  }
}

# SLOs of the streaming job, as a custom service (Dataflow jobs are not auto-detected services).
resource "google_monitoring_custom_service" "streaming" {
  project      = var.project_id
  service_id   = "defi-risk-streaming"
  display_name = "DeFi risk streaming (${var.job_name})"
}

resource "google_monitoring_slo" "freshness" {
  project             = var.project_id
  service             = google_monitoring_custom_service.streaming.service_id
  slo_id              = "data-freshness"
  display_name        = "Data fresher than ${var.freshness_threshold_s}s (1-minute windows, ${var.slo_rolling_period_days} days)"
  goal                = var.freshness_slo_goal
  rolling_period_days = var.slo_rolling_period_days

  windows_based_sli {
    window_period = "60s"
    metric_mean_in_range {
      time_series = "metric.type = \"dataflow.googleapis.com/job/data_watermark_age\" AND ${local.job_filter}"
      range {
        min = 0
        max = var.freshness_threshold_s
      }
    }
  }
}

resource "google_monitoring_slo" "system_lag" {
  project             = var.project_id
  service             = google_monitoring_custom_service.streaming.service_id
  slo_id              = "system-lag"
  display_name        = "System lag under ${var.system_lag_threshold_s}s (1-minute windows, ${var.slo_rolling_period_days} days)"
  goal                = 0.999
  rolling_period_days = var.slo_rolling_period_days

  windows_based_sli {
    window_period = "60s"
    metric_mean_in_range {
      time_series = "metric.type = \"dataflow.googleapis.com/job/system_lag\" AND ${local.job_filter}"
      range {
        min = 0
        max = var.system_lag_threshold_s
      }
    }
  }
}
