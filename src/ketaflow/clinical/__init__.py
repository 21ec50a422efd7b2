"""ketaflow.clinical."""
