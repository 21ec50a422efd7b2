"""ketaflow.store."""
