variable "project_id" {
  description = "Project that owns the buckets."
  type        = string
}

variable "location" {
  description = "Bucket location (a region such as europe-west1, or a multi-region). Keep it with the Dataflow region."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of the (globally unique) bucket names, e.g. `<project>-defi-risk`."
  type        = string
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete non-empty buckets. Never in prod."
  type        = bool
  default     = false
}

variable "cold_after_days" {
  description = "Age in days after which hot-tier objects move to var.cold_storage_class."
  type        = number
  default     = 90
}

variable "cold_storage_class" {
  description = "Storage class of hot-tier objects older than var.cold_after_days: COLDLINE or ARCHIVE."
  type        = string
  default     = "COLDLINE"

  validation {
    condition     = contains(["COLDLINE", "ARCHIVE"], var.cold_storage_class)
    error_message = "cold_storage_class must be COLDLINE or ARCHIVE."
  }
}

variable "retention_days" {
  description = "Age in days after which hot-tier objects are deleted (2555 days = 7 years of record keeping)."
  type        = number
  default     = 2555
}

variable "backfill_retention_days" {
  description = "Age in days after which backfill inputs and outputs are deleted (the results live in BigQuery)."
  type        = number
  default     = 30
}

variable "temp_retention_days" {
  description = "Age in days after which Dataflow temp files are deleted."
  type        = number
  default     = 7
}

variable "noncurrent_retention_days" {
  description = "Days a replaced or deleted object version is kept (versioning is on everywhere)."
  type        = number
  default     = 30
}

variable "enable_data_access_audit_logs" {
  description = "Turn on DATA_READ / DATA_WRITE audit logs for Cloud Storage (off only where the organisation sets them)."
  type        = bool
  default     = true
}

variable "kms_key_name" {
  description = "Cloud KMS key for the buckets' default encryption (CMEK); null keeps Google-managed keys."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels on every bucket."
  type        = map(string)
  default     = {}
}
