"""Alembic migrations of the review database (a package so that installs ship them)."""
