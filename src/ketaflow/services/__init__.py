"""ketaflow.services."""
