"""Persistence: typed models, repositories, the unit of work and Alembic migrations."""
