"""Cursor pagination, Stripe's way: newest first, `limit` and `starting_after`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import Query
from pydantic import BaseModel

from recur.kit.db import UnitOfWork

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    object: str = "list"
    data: list[T]
    has_more: bool


Limit = Annotated[int, Query(ge=1, le=100, description="How many objects, 1 to 100")]
StartingAfter = Annotated[
    str | None, Query(max_length=64, description="The id after which the page starts")
]


async def fetch_page(
    uow: UnitOfWork,
    stmt: sa.Select[Any],
    id_column: sa.ColumnElement[str],
    limit: int,
    starting_after: str | None,
) -> tuple[Sequence[sa.Row[Any]], bool]:
    """Rows of `stmt` newest first (ids are time-ordered) after the cursor; and if more follow."""
    if starting_after is not None:
        stmt = stmt.where(id_column < starting_after)
    rows = await uow.fetch_all(stmt.order_by(id_column.desc()).limit(limit + 1))
    return rows[:limit], len(rows) > limit


def to_page(rows: Sequence[Any], has_more: bool, convert: Callable[[Any], T]) -> Page[T]:
    return Page[T](data=[convert(r) for r in rows], has_more=has_more)
