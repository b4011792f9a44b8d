"""`recur migrate`: Alembic, driven from code so that no alembic.ini is needed."""

from __future__ import annotations

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "recur:migrations")
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision`."""
    command.upgrade(alembic_config(database_url), revision)


def new_revision(message: str, server_url: str) -> str:
    """Autogenerate the next revision against a scratch PostgreSQL database on `server_url`
    (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432), and make its ALTERs work on SQLite
    too by naming schemas through `recur.migrations.schema`. Returns the new file's path."""
    import asyncio
    import re
    from pathlib import Path

    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    scratch = "recur_autogenerate"

    async def recreate() -> None:
        admin = create_async_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{scratch}"'))
        await admin.dispose()

    asyncio.run(recreate())
    url = f"{server_url}/{scratch}"
    upgrade(url)
    versions = Path(__file__).parent / "migrations" / "versions"
    number = len(list(versions.glob("[0-9][0-9][0-9][0-9]_*.py"))) + 1
    script = command.revision(
        alembic_config(url), message=message, autogenerate=True, rev_id=f"{number:04d}"
    )
    assert script is not None and not isinstance(script, list)
    path = Path(script.path)
    text = re.sub(
        r"""(schema|source_schema|referent_schema)=['"]([a-z_]+)['"]""",
        r'\1=schema("\2")',
        path.read_text(),
    )
    text = re.sub(
        r"""\[['"]([a-z_]+)\.([a-z_]+\.[a-z_]+)['"]\]""", r'[qualified("\1", "\2")]', text
    )
    text = text.replace(
        "from alembic import op\n",
        "from alembic import op\n\nfrom recur.migrations import qualified, schema\n",
        1,
    )
    path.write_text(text)
    return str(path)
