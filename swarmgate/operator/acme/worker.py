"""The ACME worker: orders run on a thread of their own, never on the reconcile thread (I/O).

The pass decides (`planning/acme_plan`) and hands the worker the hosts that are due (`submit`); the
worker runs one `client.issue` at a time, each bounded by a timeout, and keeps each outcome until
the next pass collects it (`drain`). A host already queued or under way is not queued twice, so a
pass every 250 ms never stacks orders. One host's failure is that host's outcome only: the next
host's order runs all the same.

The private key of each certificate stays in memory, inside the outcome, until the pass writes it
into its Swarm secret; nothing here logs it (`Issued` leaves it out of its `repr`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from swarmgate.operator.acme.client import AcmeError
from swarmgate.operator.acme.client import Issued as ClientIssued
from swarmgate.operator.acme.client import issue as client_issue
from swarmgate.operator.planning import certificates
from swarmgate.operator.planning.acme_plan import Issued, Outcome
from swarmgate.operator.planning.certificates import Order

log = logging.getLogger("swarmgate.acme")

Issuer = Callable[[str, ec.EllipticCurvePrivateKey, "str | None", str, "str | None", float], ClientIssued]
ISSUE_TIMEOUT_SECONDS = 90.0


@dataclass(frozen=True)
class _Job:
    order: Order
    account_key: ec.EllipticCurvePrivateKey


class AcmeWorker:
    def __init__(self, directory: str, *, email: str | None = None, ca_bundle: str | None = None,
                 issuer: Issuer = client_issue, timeout: float = ISSUE_TIMEOUT_SECONDS,
                 on_outcome: Callable[[], None] = lambda: None) -> None:
        self.directory, self.email, self.ca_bundle = directory, email, ca_bundle
        self._issuer, self._timeout, self._on_outcome = issuer, timeout, on_outcome
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # hosts queued, under way, or whose outcome is not drained yet
        self._outcomes: list[Outcome] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="acme", daemon=True)
            self._thread.start()

    def stop(self, wait: float = 5.0) -> None:
        """Stop taking orders; queued ones are dropped. An order under way is waited for `wait`
        seconds at most, then abandoned with the (daemon) thread: a certificate the CA issues after
        that is never stored, and the next leader orders the host again."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=wait)
            self._thread = None

    def submit(self, orders: Iterable[Order], account_key: ec.EllipticCurvePrivateKey) -> list[Order]:
        """Queue the orders whose host is not queued or under way already; returns those queued."""
        queued = []
        with self._lock:
            for order in orders:
                if order.host in self._busy:
                    continue
                self._busy.add(order.host)
                queued.append(order)
        for order in queued:
            self._jobs.put(_Job(order, account_key))
        return queued

    def drain(self) -> list[Outcome]:
        """The outcomes since the last call, oldest first. Their hosts may be queued again from now:
        the pass that drains them learns them before it submits anything."""
        with self._lock:
            out, self._outcomes = self._outcomes, []
            self._busy.difference_update(o.host for o in out)
        return out

    def busy(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._busy)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            outcome = self._one(job)
            # The host stays busy until a pass drains this outcome: a pass that drained before it came
            # and submits after would otherwise order the host again, knowing neither the certificate
            # nor the failure (seen on the lab: a failing host ordered twice, one second apart).
            with self._lock:
                self._outcomes.append(outcome)
            self._on_outcome()

    def _one(self, job: _Job) -> Outcome:
        host = job.order.host
        log.info("ACME order", extra={"host": host, "reason": job.order.reason, "failures": job.order.failures})
        try:
            got = self._issuer(self.directory, job.account_key, self.email, host, self.ca_bundle, self._timeout)
            cert = certificates.describe(host, got.cert_chain_pem, self.directory)
            data = certificates.secret_data(got.cert_chain_pem, got.key_pem)
        except AcmeError as failed:
            log.warning("ACME order failed", extra={"host": host, "error": failed.reason})
            return Outcome(host, error=failed.reason)
        except Exception as bug:  # a worker that dies would order nothing ever again
            reason = f"unexpected {type(bug).__name__} while ordering"
            log.error("ACME order failed", extra={"host": host, "error": reason})
            return Outcome(host, error=reason)
        log.info("ACME certificate issued", extra={"host": host, "secret": cert.secret_name,
                                                    "not_after": certificates.format_time(cert.not_after)})
        return Outcome(host, issued=Issued(cert, data))
