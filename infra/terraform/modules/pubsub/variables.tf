variable "project_id" {
  description = "Project of the topics and subscriptions."
  type        = string
}

variable "input_topics" {
  description = "Topics the pipelines read (schemas.registry.INPUT_TOPICS); each gets `<topic>.sub`."
  type        = list(string)
  default = [
    "market.prices.v1",
    "settlements.v1",
    "dex.trades.v1",
    "liquidity.v1",
    "transfers.v1",
    "accounts.profiles.v1",
  ]
}

variable "alert_topics" {
  description = "Topics the pipelines publish alerts to (schemas.registry.ALERT_TOPICS)."
  type        = list(string)
  default     = ["alerts.margin.v1", "alerts.surveillance.v1", "alerts.compliance.v1"]
}

variable "message_retention_duration" {
  description = "How long topics and subscriptions keep messages (seek / replay window)."
  type        = string
  default     = "604800s" # 7 days, the Pub/Sub maximum for subscriptions
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the subscriptions (Dataflow extends it while it works on a message)."
  type        = number
  default     = 60
}

variable "max_delivery_attempts" {
  description = "Deliveries before Pub/Sub forwards a message to `<topic>.dead-letter` (schemas.topics.MAX_DELIVERY_ATTEMPTS)."
  type        = number
  default     = 5
}

variable "kms_key_name" {
  description = "Cloud KMS key for the topics (CMEK); null keeps Google-managed keys."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels on every topic and subscription."
  type        = map(string)
  default     = {}
}
