"""The lifecycle stages: one implementation each, called by the CLI, DVC and Prefect."""
