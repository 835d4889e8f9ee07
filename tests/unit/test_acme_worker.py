"""The ACME worker's queue (operator/acme/worker.py): orders run on its own thread, a host is never
queued twice, a failing host does not stop the next, and the key never shows. The issuer here is a
local function that makes a self-signed chain (the real client is proved against Pebble in
tests/lab/test_acme_client.py and test_acme_loopback.py)."""

from __future__ import annotations

import datetime
import threading

from cryptography.hazmat.primitives.asymmetric import ec

from swarmgate.operator.acme.client import AcmeError, Issued
from swarmgate.operator.acme.worker import AcmeWorker
from swarmgate.operator.planning.certificates import Order
from tests.unit.test_certificates import self_signed

DIRECTORY = "https://127.0.0.1:14000/dir"
KEY = ec.derive_private_key(12345, ec.SECP256R1())


def test_orders_run_off_the_callers_thread_once_per_host_and_failures_stay_with_their_host() -> None:
    release = threading.Event()
    calls: list[str] = []
    done = threading.Semaphore(0)

    def issuer(directory: str, key: ec.EllipticCurvePrivateKey, email: str | None, host: str,
               ca_bundle: str | None, timeout: float) -> Issued:
        calls.append(host)
        release.wait(10)
        if host.startswith("bad."):
            raise AcmeError("urn:ietf:params:acme:error:connection: no answer")
        now = datetime.datetime.now(datetime.UTC)
        chain, key_pem = self_signed(host, now, now + datetime.timedelta(minutes=5))
        return Issued(chain, key_pem, now, now + datetime.timedelta(minutes=5), "https://ca/acct/1")

    worker = AcmeWorker(DIRECTORY, issuer=issuer, timeout=5, on_outcome=done.release)
    worker.start()
    try:
        queued = worker.submit([Order("bad.example.com", "missing"), Order("a.example.com", "missing")], KEY)
        assert [o.host for o in queued] == ["bad.example.com", "a.example.com"]
        # A pass every 250 ms submits the same orders again: nothing is queued twice.
        assert worker.submit([Order("a.example.com", "missing")], KEY) == []
        assert worker.busy() == {"bad.example.com", "a.example.com"}
        release.set()
        assert done.acquire(timeout=10) and done.acquire(timeout=10)
        # Done, but not drained yet: a pass that has not learnt the outcomes cannot order them again.
        assert worker.submit([Order("bad.example.com", "missing")], KEY) == []
        outcomes = {o.host: o for o in worker.drain()}
        assert worker.drain() == [] and worker.busy() == frozenset()
        assert outcomes["bad.example.com"].issued is None and "connection" in outcomes["bad.example.com"].error
        good = outcomes["a.example.com"].issued
        assert good is not None and good.cert.host == "a.example.com" and good.cert.directory == DIRECTORY
        assert b"PRIVATE KEY" in good.data and "PRIVATE" not in repr(outcomes)
        assert calls == ["bad.example.com", "a.example.com"]
    finally:
        worker.stop()
