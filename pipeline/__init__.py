"""Trip-duration training pipeline: stages as plain functions, wired by Prefect flows."""
