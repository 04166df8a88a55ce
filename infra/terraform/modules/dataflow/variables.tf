variable "project_id" {
  description = "Project the job runs in."
  type        = string
}

variable "region" {
  description = "Dataflow region (keep it with the buckets and the dataset)."
  type        = string
}

variable "job_name" {
  description = "Name of the streaming job; an update in place keeps the name (and the step labels)."
  type        = string
  default     = "defi-risk-streaming"
}

variable "container_spec_gcs_path" {
  description = "gs:// path of the flex template spec (JSON) built from runners/dataflow/job.py."
  type        = string
}

variable "service_account_email" {
  description = "Worker service account (modules/iam)."
  type        = string
}

variable "temp_location" {
  description = "gs:// prefix for Dataflow temp files."
  type        = string
}

variable "staging_location" {
  description = "gs:// prefix for staged packages."
  type        = string
}

variable "pipeline" {
  description = "Which graph to run (--pipeline): all, risk, surveillance or compliance."
  type        = string
  default     = "all"

  validation {
    condition     = contains(["all", "risk", "surveillance", "compliance"], var.pipeline)
    error_message = "pipeline must be one of all, risk, surveillance, compliance."
  }
}

variable "subscriptions" {
  description = "Input topic -> subscription id it is read from. The job derives `projects/P/subscriptions/<topic>.sub` from --pubsub_project, so this only checks the names and orders creation."
  type        = map(string)
}

variable "bigquery_dataset" {
  description = "Dataset the job writes to (--bq_dataset)."
  type        = string
}

variable "sanctions_store" {
  description = "gs:// sanctions list store (--sanctions_store), written by `defi-risk sanctions load`."
  type        = string
}

variable "sanctions_poll_minutes" {
  description = "Minutes between re-reads of the sanctions store (--sanctions_poll_minutes); new list versions apply without a restart."
  type        = number
  default     = 15

  validation {
    condition     = var.sanctions_poll_minutes > 0
    error_message = "A streaming job must poll the sanctions store: sanctions_poll_minutes > 0."
  }
}

variable "extra_parameters" {
  description = "More template parameters (pipeline options without the leading --), e.g. var_methods."
  type        = map(string)
  default     = {}
}

variable "machine_type" {
  description = "Worker machine type."
  type        = string
  default     = "n2-standard-4"
}

variable "max_workers" {
  description = "Autoscaling ceiling."
  type        = number
  default     = 10
}

variable "subnetwork" {
  description = "Subnetwork self link or regions/R/subnetworks/S for the workers (private IPs only, so it needs Private Google Access)."
  type        = string
  default     = null
}

variable "kms_key_name" {
  description = "Cloud KMS key for the job's state (CMEK); null keeps Google-managed keys."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels on the job."
  type        = map(string)
  default     = {}
}
