variable "project_id" {
  description = "Project of the worker service account."
  type        = string
}

variable "account_id" {
  description = "account_id of the worker service account (6-30 characters)."
  type        = string
  default     = "defi-risk-dataflow"
}

variable "dataset_id" {
  description = "The `risk` dataset: the worker edits its tables and nothing else in BigQuery."
  type        = string
}

variable "subscription_ids" {
  description = "Input topic -> subscription id: the only subscriptions the worker consumes."
  type        = map(string)
}

variable "alert_topic_ids" {
  description = "Alert topic -> topic id: the only topics the worker publishes to."
  type        = map(string)
}

variable "read_write_buckets" {
  description = "Buckets the worker reads and writes (Dataflow temp/staging, backfill)."
  type        = list(string)
}

variable "read_only_buckets" {
  description = "Buckets the worker only reads (hot-tier archive, sanctions store)."
  type        = list(string)
}

variable "artifact_registry_repository" {
  description = "Artifact Registry repository of the flex template image, as {location, name}; null when the image lives elsewhere."
  type = object({
    location = string
    name     = string
  })
  default = null
}

variable "deployers" {
  description = "Members (e.g. the CI service account) allowed to launch jobs as the worker (iam.serviceAccountUser on the account only)."
  type        = list(string)
  default     = []
}
