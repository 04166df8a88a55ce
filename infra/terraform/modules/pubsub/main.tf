# Names follow schemas/topics.py, so the local emulator and production agree:
#   <topic>                    every topic of schemas.registry.TOPICS, with its Avro schema
#   <topic>.sub                the one subscription of a topic (the pipelines read input topics')
#   <topic>.dead-letter        where <topic>.sub forwards a message after max_delivery_attempts
#   <topic>.dead-letter.sub    keeps the dead letters until someone looks at them

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  topics = toset(concat(var.input_topics, var.alert_topics))

  # The generated Avro schemas (`defi-risk schemas generate`): read in place, never copied.
  # File stem: schemas.registry.avro_name(topic), i.e. dots replaced by underscores.
  avro_dir = "${path.module}/../../../../schemas/avro"

  # Dead-letter forwarding is done by the Pub/Sub service agent, which needs to publish to the
  # dead-letter topic and to subscribe to (ack) the source subscription.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_schema" "topic" {
  for_each = local.topics

  project    = var.project_id
  name       = each.key
  type       = "AVRO"
  definition = file("${local.avro_dir}/${replace(each.key, ".", "_")}.avsc")
}

resource "google_pubsub_topic" "topic" {
  #checkov:skip=CKV_GCP_83:CMEK is opt-in through var.kms_key_name; the default is Google-managed encryption.
  for_each = local.topics

  project                    = var.project_id
  name                       = each.key
  kms_key_name               = var.kms_key_name
  message_retention_duration = var.message_retention_duration
  labels                     = var.labels

  schema_settings {
    schema   = google_pubsub_schema.topic[each.key].id
    encoding = "BINARY"
  }
}

# Dead letters are whatever the subscriber could not ack, so these topics carry no schema: a
# schema here could only make Pub/Sub refuse the very messages we want to keep.
resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:CMEK is opt-in through var.kms_key_name; the default is Google-managed encryption.
  for_each = local.topics

  project                    = var.project_id
  name                       = "${each.key}.dead-letter"
  kms_key_name               = var.kms_key_name
  message_retention_duration = var.message_retention_duration
  labels                     = var.labels
}

resource "google_pubsub_subscription" "topic" {
  for_each = local.topics

  project                    = var.project_id
  name                       = "${each.key}.sub"
  topic                      = google_pubsub_topic.topic[each.key].id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false
  labels                     = var.labels

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = "" # never expire, even when no one pulls for 31 days
  }
}

resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.topics

  project                    = var.project_id
  name                       = "${each.key}.dead-letter.sub"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.topics

  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.key].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = local.topics

  project      = var.project_id
  subscription = google_pubsub_subscription.topic[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
