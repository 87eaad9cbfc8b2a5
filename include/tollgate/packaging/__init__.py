"""Packaging helpers (image lock files); nothing here runs inside Airflow or the trainer."""
