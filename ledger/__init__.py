"""The write model: domain events and decisions, the event store adapter, settings."""
