variable "project_id" {
  description = "Project that owns the dataset."
  type        = string
}

variable "location" {
  description = "BigQuery location of the dataset (a region such as europe-west1, or EU / US)."
  type        = string
}

variable "dataset_id" {
  description = "Dataset id; the pipelines and sql/ use `risk` (schemas.registry.DATASET)."
  type        = string
  default     = "risk"
}

variable "deletion_protection" {
  description = "Refuse to destroy tables and views from Terraform. Always true in prod."
  type        = bool
  default     = true
}

variable "kms_key_name" {
  description = "Cloud KMS key for the dataset's default encryption (CMEK); null keeps Google-managed keys."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels on the dataset, its tables and views."
  type        = map(string)
  default     = {}
}
