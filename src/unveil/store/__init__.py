"""Persistence: tables, migrations and the database connection."""
