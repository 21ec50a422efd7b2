"""ketaflow.pk."""
