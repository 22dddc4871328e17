"""Private: the usage ledger from a notebook: `b.usage()`, `b.prices`, `b.budget()`.

Thin adapters over the usage operations (the same ones `GET bodhi/v1/usage` calls):
arguments in, pandas DataFrames and dicts out. pandas is imported only when a frame
is asked for, so `import bodhi_nb` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..objs.errors import InvalidRequestError
from ..server_core.operations import USAGE_ROW_FIELDS, USAGE_SUM_FIELDS, parse_usage_by

if TYPE_CHECKING:
    import pandas as pd

    from ..server_core.operations import Operations
    from ._loop_thread import LoopThread

__all__ = ["UNSET", "Prices", "budget", "usage_frame"]

UNSET: Any = object()  # "not given" (None means "remove" for the budget)
_PAGE = 1000


def usage_frame(ops: Operations, loop: LoopThread, since: object = None, until: object = None, by: str | Sequence[str] | None = None,
                limit: int | None = None, **filters: str | None) -> pd.DataFrame:
    """Every matching row (newest first; at most `limit`), or with `by` the sums per group."""
    import pandas as pd

    keys = parse_usage_by(by)
    data: list[dict[str, Any]] = []
    page = 1
    while True:
        size = min(_PAGE, limit) if limit else _PAGE
        res = loop.run(ops.usage.query(since, until, keys or None, page=page, page_size=size, **filters))
        data.extend(res.data)
        if len(data) >= res.total or not res.data or (limit and len(data) >= limit):
            break
        page += 1
    if keys:
        return pd.DataFrame(data, columns=[*keys, *USAGE_SUM_FIELDS])
    frame = pd.DataFrame(data[:limit] if limit else data, columns=["id", *USAGE_ROW_FIELDS, "content"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    if frame["content"].isna().all():
        frame = frame.drop(columns="content")
    return frame


def budget(ops: Operations, loop: LoopThread, daily_usd: Any = UNSET) -> dict[str, Any]:
    if daily_usd is UNSET:
        state = loop.run(ops.usage.budget())
    else:
        state = loop.run(ops.usage.set_budget(daily_usd))
    return state.public()  # type: ignore[no-any-return]


class Prices:
    """What a million tokens cost, per model name or per provider (API model id).

    `b.prices.set("gpt-4o-mini", input=0.15, output=0.60)` or
    `b.prices.set(provider="openai", input=2.5, output=10)`; a model price wins over its
    provider's. Costs are computed as rows are written; earlier rows keep their cost.
    """

    def __init__(self, ops: Operations, loop: LoopThread) -> None:
        self._ops, self._loop = ops, loop

    def __repr__(self) -> str:
        return f"<Prices {len(self.list())} set>"

    @staticmethod
    def _target(model: str | None, provider: str | None) -> tuple[str, str]:
        if (model is None) == (provider is None):
            raise InvalidRequestError("Name either a model or a provider=...", param="model")
        return (model, "model") if model is not None else (provider, "provider")  # type: ignore[return-value]

    def set(self, model: str | None = None, *, provider: str | None = None, input: float,
            output: float) -> dict[str, Any]:
        name, scope = self._target(model, provider)
        price = self._loop.run(self._ops.usage.set_price(name, input, output, scope=scope))  # type: ignore[arg-type]
        return asdict(price)

    def list(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self._loop.run(self._ops.usage.prices())]

    def delete(self, model: str | None = None, *, provider: str | None = None) -> None:
        name, scope = self._target(model, provider)
        self._loop.run(self._ops.usage.delete_price(name, scope=scope))  # type: ignore[arg-type]


