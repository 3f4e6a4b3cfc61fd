"""The migrations build exactly the schema that tables.py describes, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.server_process import database
from unveil.store.database import make_engine, upgrade
from unveil.store.tables import metadata


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrated_schema_matches_the_tables(kind: str, tmp_path: Path) -> None:
    with database(kind, tmp_path) as url:
        upgrade(url)
        upgrade(url)  # applying again changes nothing
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                differences = compare_metadata(MigrationContext.configure(conn), metadata)
        finally:
            engine.dispose()
    assert differences == []


def test_unveil_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from sqlalchemy import inspect

    from unveil.cli.main import main

    result = CliRunner().invoke(main, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    engine = make_engine(f"sqlite:///{tmp_path / 'unveil.db'}")
    try:
        assert {"flags", "audit", "tokens", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
