"""Recur's Alembic migrations.

On SQLite the services' schemas do not exist. Creating tables follows the engine's
schema_translate_map, but Alembic's ALTER operations do not, so migrations that alter a table
name its schema through `schema(...)`, which is None on SQLite.
"""

from __future__ import annotations

from alembic import op


def schema(name: str) -> str | None:
    """The schema `name` on PostgreSQL; none on SQLite, where every table shares one file."""
    return None if op.get_bind().dialect.name == "sqlite" else name


def qualified(schema_name: str, target: str) -> str:
    """A foreign key target (`table.column`) in `schema_name`, or unqualified on SQLite."""
    name = schema(schema_name)
    return f"{name}.{target}" if name else target
