"""pgcast.watch() against notify_trigger() over random templates and values (hypothesis)."""

from __future__ import annotations

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.sql_watch_support import Op, run_both, watch

PIECES = st.sampled_from(["{i}", "{s}", "{f}", "{ts}", "{j}", "{", "}", ":", "a", "'", "$$", "é"])
VALUES_ = st.fixed_dictionaries(
    {
        "i": st.none() | st.integers(-(2**31), 2**31 - 1),
        "s": st.none()
        | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=5),
        "f": st.none() | st.floats(allow_nan=True, allow_infinity=True),
        "ts": st.none()
        | st.sampled_from(["2024-01-01 00:00+02", "infinity", "1999-12-31 23:59:59.123456Z"]),
        "j": st.none() | st.sampled_from(['{"a": [1, "b"]}', '"str"', "null", "1.0e3"]),
    }
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    templates=st.lists(
        st.lists(PIECES, min_size=1, max_size=4).map("".join), min_size=1, max_size=3
    ),
    rows=st.lists(VALUES_, min_size=2, max_size=2),
)
async def test_property_random_templates_and_values(
    pg: asyncpg.Connection, templates: list[str], rows: list[dict[str, object]]
) -> None:
    """Random templates (braces, quotes, $$) over random values: watch publishes what
    notify_trigger publishes, on insert, on an update to the second values, on delete."""
    columns = "id int PRIMARY KEY, i int, s text, f float8, ts timestamptz, j jsonb"
    if not await watchable(pg, columns, templates):  # a brace pair around a non-column
        return
    first, second = ([row[k] for k in ("i", "s", "f", "ts", "j")] for row in rows)
    ops: list[Op] = [
        ("INSERT INTO {t} VALUES (1, $1, $2, $3, $4::text::timestamptz, $5::text::jsonb)", first),
        (
            "UPDATE {t} SET i = $1, s = $2, f = $3, ts = $4::text::timestamptz,"
            " j = $5::text::jsonb",
            second,
        ),
        "DELETE FROM {t}",
    ]
    notify, watched = await run_both(pg, columns, templates, ops)
    assert watched == notify


async def watchable(pg: asyncpg.Connection, columns: str, templates: list[str]) -> bool:
    """Whether watch() accepts the templates, tried on a scratch table that is rolled back."""
    tx = pg.transaction()
    await tx.start()
    try:
        await pg.execute(f"CREATE TABLE probe ({columns})")
        await watch(pg, "probe", templates, "{INSERT}")
    except asyncpg.UndefinedColumnError:
        return False
    finally:
        await tx.rollback()
    return True
