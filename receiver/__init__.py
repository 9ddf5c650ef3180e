"""tailpage receiver: Alertmanager webhooks routed to people by severity."""
