"""ketaflow.api."""
