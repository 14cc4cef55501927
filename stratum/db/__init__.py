"""Database schema (SQLAlchemy models for Alembic) and connection helpers."""
