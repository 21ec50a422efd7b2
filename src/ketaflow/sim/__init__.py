"""ketaflow.sim."""
