"""Only .sql files are migrations: a stray directory or file beside them is ignored."""

from __future__ import annotations

from listener.migrate import migrations


def test_migrations_are_the_sql_files_in_order() -> None:
    """A __pycache__ directory in sql/ (left by `import pgcast.sql`) is not read as one."""
    names = [m.name for m in migrations()]
    assert names == sorted(names)
    assert names
    assert all(name.endswith(".sql") for name in names)
    assert names[0].startswith("001_")
