"""ketaflow.dosing."""
