"""ketaflow.web."""
