"""Statements name their parameters; the drivers send them as store/statements.py renders them."""

from __future__ import annotations

import sqlite3

import pytest

from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.store import statements as q


def test_a_name_is_one_number_wherever_it_is_used_and_casts_are_left_alone() -> None:
    sql = "SELECT :a::bigint, (x)::text, :b, :a FROM t WHERE c = ANY(:ids::text[])"
    pg = q.for_postgres(sql)
    assert pg.sql == "SELECT $1::bigint, (x)::text, $2, $1 FROM t WHERE c = ANY($3::text[])"
    assert pg.names == ("a", "b", "ids")
    assert tuple(pg.values({"ids": ["x"], "b": 2, "a": 1, "unused": 0})) == (1, 2, ["x"])
    assert q.for_sqlite(sql).sql == "SELECT ?1::bigint, (x)::text, ?2, ?1 FROM t WHERE c = ANY(?3::text[])"
    assert q.for_postgres(sql) is pg, "rendered once per text"


def test_statements_without_parameters_or_with_one_take_any_mapping() -> None:
    assert tuple(q.for_sqlite(q.COUNT_BY_STATE).values({})) == ()
    assert tuple(q.for_sqlite(q.GET_JOB).values({"id": "j", "owner": None})) == ("j",)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_a_list_is_one_array_on_postgresql_and_a_placeholder_per_value_on_sqlite(n: int) -> None:
    ids = [f"j{i}" for i in range(n)]
    pg = q.for_postgres(q.get_jobs(q.POSTGRES, n, True))
    assert tuple(pg.values({**q.POSTGRES.values("id", ids), "owner": "o"})) == (
        (ids[0] if n == 1 else ids),
        "o",
    )
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE jobs (id TEXT, owner TEXT)")
    conn.executemany("INSERT INTO jobs VALUES (?, ?)", [(i, "o") for i in ids] + [("other", "o")])
    lite = q.for_sqlite(
        f"SELECT id FROM jobs WHERE {q.SQLITE.any_of('id', n)} AND owner = :owner ORDER BY id"
    )
    found = conn.execute(lite.sql, lite.values({**q.SQLITE.values("id", ids), "owner": "o"})).fetchall()
    assert [r[0] for r in found] == ids


def test_a_filter_names_each_parameter_once() -> None:
    f = JobFilter(owner="o", kind="k", states=[1, 2], labels={"a": "1", "b": "2"}, search="x")
    w = q.job_filter(q.SQLITE, f)
    sql = "SELECT 1 FROM jobs" + w.sql()
    assert set(q.for_sqlite(sql).names) == set(w.params)
    with pytest.raises(ValueError, match="named twice"):
        w.add("kind = :kind", kind="other")
