output "topic_ids" {
  description = "Topic name -> topic id (projects/P/topics/T), input and alert topics."
  value       = { for name, topic in google_pubsub_topic.topic : name => topic.id }
}

output "input_subscription_ids" {
  description = "Input topic -> the id of its `<topic>.sub`, the subscriptions the pipelines read."
  value       = { for name in var.input_topics : name => google_pubsub_subscription.topic[name].id }
}

output "alert_topic_ids" {
  description = "Alert topic -> topic id: the only topics the pipelines publish to."
  value       = { for name in var.alert_topics : name => google_pubsub_topic.topic[name].id }
}

output "dead_letter_topic_ids" {
  description = "Topic -> the id of its `<topic>.dead-letter` topic."
  value       = { for name, topic in google_pubsub_topic.dead_letter : name => topic.id }
}

output "dead_letter_subscription_names" {
  description = "Topic -> the name of its `<topic>.dead-letter.sub` (watched by modules/monitoring)."
  value       = { for name, sub in google_pubsub_subscription.dead_letter : name => sub.name }
}

output "input_subscription_names" {
  description = "Input topic -> the name of its `<topic>.sub`."
  value       = { for name in var.input_topics : name => google_pubsub_subscription.topic[name].name }
}
