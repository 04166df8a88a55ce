variable "project_id" {
  description = "Project of the job, the subscriptions and the alert policies."
  type        = string
}

variable "job_name" {
  description = "Name of the Dataflow streaming job to watch."
  type        = string
}

variable "dead_letter_subscriptions" {
  description = "Names of the `<topic>.dead-letter.sub` subscriptions."
  type        = list(string)
}

variable "input_subscriptions" {
  description = "Names of the `<topic>.sub` subscriptions the job reads (their dead-letter forwarding is watched)."
  type        = list(string)
}

variable "notification_channels" {
  description = "Notification channel ids (projects/P/notificationChannels/N) of every alert policy."
  type        = list(string)
  default     = []
}

variable "system_lag_threshold_s" {
  description = "Alert when the job's system lag stays above this many seconds."
  type        = number
  default     = 300
}

variable "freshness_threshold_s" {
  description = "Data freshness target: the watermark age, in seconds, alerted on and used by the SLO."
  type        = number
  default     = 120
}

variable "freshness_slo_goal" {
  description = "Fraction of 1-minute windows in which the data is fresher than freshness_threshold_s."
  type        = number
  default     = 0.99
}

variable "slo_rolling_period_days" {
  description = "Rolling window of the SLOs, in days."
  type        = number
  default     = 28
}

variable "dead_letter_threshold" {
  description = "Alert when a dead-letter subscription holds more than this many messages."
  type        = number
  default     = 0
}

variable "alert_duration" {
  description = "How long a condition must hold before an incident opens."
  type        = string
  default     = "300s"
}
