"""``python -m ketaflow`` runs the command line."""

from ketaflow.cli.main import run

run()
