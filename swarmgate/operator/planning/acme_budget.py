"""The global budget of ACME orders: how many a pass may hand the worker, and which go first (pure).

Every service's certificates are ordered on one ACME account, and a CA rate-limits accounts (Let's
Encrypt: 300 new orders in 3 hours). Whoever controls one service's labels could otherwise make the
leader order without end: many hosts, each backing off on its own, or new host names every minute.
Three bounds, each cheap to check in a pass:

* `ACMEMaxHostsPerService` (the route table sets a service beyond it aside: `acme_hosts`);
* `ACMEOrdersPerHour`: orders handed to the worker in any rolling hour, all hosts together;
* `ORDERS_PER_PASS`: at most this many handed over in one pass (the worker runs them one at a time).

When the budget is spent, the orders left wait until the oldest order in the window is an hour
old (`resume_at`): the pass wakes up then. Renewals go first, then hosts with fewer failures in a row,
then by name: a host whose orders keep failing (a name that points at no proxy, say) is the last
to spend what is left, and cannot hold back the renewal of a certificate that is being served.

The ledger lives in the leading operator's memory only: a new leader starts with an empty one, so a
failover can at worst allow one more hour's budget.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from swarmgate.operator.planning.certificates import Order

WINDOW: Final = datetime.timedelta(hours=1)
ORDERS_PER_PASS: Final = 10


@dataclass(frozen=True)
class OrderLedger:
    """When each order of the last hour was handed to the worker, oldest first."""

    placed: tuple[datetime.datetime, ...] = ()

    def recent(self, now: datetime.datetime) -> OrderLedger:
        """Only the orders still inside the window (so the ledger never outgrows the budget)."""
        kept = tuple(t for t in self.placed if t > now - WINDOW)
        return self if kept == self.placed else OrderLedger(kept)

    def record(self, count: int, now: datetime.datetime) -> OrderLedger:
        return OrderLedger((*self.recent(now).placed, *([now] * count))) if count > 0 else self

    def left(self, now: datetime.datetime, per_hour: int) -> int:
        return max(per_hour - len(self.recent(now).placed), 0)


def priority(order: Order) -> tuple[bool, int, str]:
    """Renewals first, then fewer failures in a row, then the host's name (deterministic)."""
    return (order.reason != "renewal", order.failures, order.host)


@dataclass(frozen=True)
class Rationed:
    """The orders this pass may place, the hosts that wait for the budget, and when it frees."""

    orders: tuple[Order, ...] = ()
    deferred: tuple[str, ...] = ()
    resume_at: datetime.datetime | None = None


def ration(orders: Iterable[Order], ledger: OrderLedger, now: datetime.datetime, *, per_hour: int,
           per_pass: int = ORDERS_PER_PASS) -> Rationed:
    """The orders within the budget (sorted by host, as `certificates.due` gives them), and the rest."""
    ranked = sorted(orders, key=priority)
    recent = ledger.recent(now)
    allowed = min(recent.left(now, per_hour), per_pass)
    taken, waiting = ranked[:allowed], ranked[allowed:]
    # Spent for the hour: the oldest order leaves the window then. (Held back by the pass's cap only,
    # the rest go once the worker brings outcomes back, and each outcome wakes a pass.)
    spent = bool(waiting) and recent.left(now, per_hour) == 0 and bool(recent.placed)
    resume_at = recent.placed[0] + WINDOW if spent else None
    return Rationed(tuple(sorted(taken)), tuple(sorted(o.host for o in waiting)), resume_at)
