"""The database URL forms users type (PostgreSQL through asyncpg only: another driver is refused, saying
so)."""

from __future__ import annotations

import pytest

from jobpulse_server.store.schema import normalize_url


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///jobpulse.db", "sqlite:///jobpulse.db"),
        ("sqlite:////var/lib/jobpulse/jp.db", "sqlite:////var/lib/jobpulse/jp.db"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres://u:p@h/db", "postgresql://u:p@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_url_forms(given: str, used: str) -> None:
    assert normalize_url(given) == used


@pytest.mark.parametrize(
    "bad",
    [
        "mysql://u@h/db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+pg8000://h/db",
        "postgresql+psycopg://h/db",
        "::",
    ],
)
def test_unsupported_urls_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        normalize_url(bad)


def test_the_psycopg_url_is_refused_naming_the_driver_to_use() -> None:
    with pytest.raises(ValueError, match="asyncpg") as refused:
        normalize_url("postgresql+psycopg://u@h/db")
    assert "postgresql://" in str(refused.value)
