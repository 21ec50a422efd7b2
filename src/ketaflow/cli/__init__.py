"""ketaflow.cli."""
