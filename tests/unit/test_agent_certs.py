"""The agent and the certificate courier's files: a push that names a file not there yet waits.

The real agent.sh and a real nginx on loopback (the harness of `test_agent`). The courier's volume
is a directory of this test (`SWARMGATE_CERTS_DIR`); the test plays the courier by writing
`<ID>.pem` into it. The wait's limit (`SWARMGATE_CERT_WAIT`) is a few seconds here, 120 in a proxy.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmgate.models.routing.tls_secrets import undelivered_secret_ids, unusable_certs_ids
from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.status import rejections
from tests.support import free_port, wait_for
from tests.unit import test_agent as harness
from tests.unit.test_agent import Proxy, digest_of

pytestmark = harness.pytestmark
workdir = harness.workdir
CERT_WAIT = 3
CERT_ID = "q2k5v1u4y7w0a3b6c9d2e5f8g"
KEY_ID = "h1j4k7m0n3p6r9s2t5u8v1w4x"


@pytest.fixture
def proxy(workdir: Path) -> Iterator[Proxy]:
    certs = workdir / "certs"
    certs.mkdir()
    p = Proxy(workdir, free_port(), free_port(),
              env={"SWARMGATE_CERTS_DIR": str(certs), "SWARMGATE_CERT_WAIT": str(CERT_WAIT)})
    try:
        yield harness.start(p)
    finally:
        p.kill()


def certs_dir(proxy: Proxy) -> Path:
    return proxy.tmp / "certs"


def tls_extra(proxy: Proxy, port: int) -> str:
    """A TLS host whose certificate and key are the courier's files."""
    d = certs_dir(proxy)
    return (f"server {{ listen 127.0.0.1:{port} ssl; server_name tls.test; "
            f"ssl_certificate {d}/{CERT_ID}.pem; ssl_certificate_key {d}/{KEY_ID}.pem; return 200 \"tls\\n\"; }}")


def deliver(proxy: Proxy) -> None:
    """What the courier does: the certificate and its key, root-only, renamed into place."""
    d = certs_dir(proxy)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=tls.test", "-keyout", str(d / "k.tmp"),
                    "-out", str(d / "c.tmp")], check=True, capture_output=True)
    for tmp, final in (("c.tmp", CERT_ID), ("k.tmp", KEY_ID)):
        (d / tmp).chmod(0o600)
        (d / tmp).rename(d / f"{final}.pem")


def test_a_push_naming_missing_certificate_files_waits_then_serves_once_they_come(proxy: Proxy) -> None:
    good = proxy.publish("v1")
    proxy.push_round()
    assert proxy.get() == (200, "v1")
    waiting = proxy.publish("v2", extra=tls_extra(proxy, free_port()))
    proxy.push_round()
    status = proxy.status()
    # Not a rejection: the old config serves, the status names the held digest and how many files.
    assert (status.serving, status.rejected, status.waiting) == (good, "", waiting)
    assert status.message == "waiting: 2 certificate files"
    rec = proxy.record()
    assert (rec.served_digest, rec.last_status, rec.waiting_digest, rec.rejected_digest) == (good, "waiting",
                                                                                            waiting, "")
    assert not proxy.store.all_current(harness.EXT)
    assert proxy.get() == (200, "v1")
    # The pusher does not push a digest the task already holds.
    seq = (status.term, status.seq)
    proxy.push_round()
    assert (proxy.status().term, proxy.status().seq) == seq
    deliver(proxy)
    wait_for(lambda: proxy.status().serving == waiting, timeout=5, what="the held config to serve once its files came")
    assert proxy.get() == (200, "v2")
    proxy.push_round()
    assert proxy.record().last_status == "ok" and proxy.store.all_current(harness.EXT)


def test_a_push_whose_files_never_come_is_rejected_naming_them_by_id(proxy: Proxy) -> None:
    proxy.publish("v1")
    proxy.push_round()
    held = proxy.publish("v2", extra=tls_extra(proxy, free_port()))
    proxy.push_round()
    assert proxy.status().waiting == held
    wait_for(lambda: proxy.status().rejected == held, timeout=CERT_WAIT + 5, what="the wait to end in a rejection")
    status = proxy.status()
    assert status.serving == digest_of(proxy.conf("v1")) and proxy.get() == (200, "v1")
    assert undelivered_secret_ids(status.message) == {CERT_ID, KEY_ID}
    assert unusable_certs_ids(status.message) == frozenset()  # nothing is said about their content


def test_a_rejected_digest_is_pushed_once_more_when_the_operator_tries_its_files_again(proxy: Proxy) -> None:
    """The operator's retry of an undelivered secret (planning/undelivered.py): the same digest,
    rejected before, is pushed again once allowed, and serves now that the courier brought the files."""
    proxy.publish("v1")
    proxy.push_round()
    held = proxy.publish("v2", extra=tls_extra(proxy, free_port()))
    proxy.push_round()
    wait_for(lambda: proxy.status().rejected == held, timeout=CERT_WAIT + 5, what="the wait to end in a rejection")
    deliver(proxy)  # late
    proxy.push_round()
    assert proxy.status().rejected == held and proxy.get() == (200, "v1")  # not pushed again by itself
    proxy.store.allow_repush(held)
    proxy.push_round()
    wait_for(lambda: proxy.status().serving == held, timeout=5, what="the digest pushed again to serve")
    assert proxy.get() == (200, "v2")
    proxy.push_round()
    rec = proxy.record()
    assert rec.last_status == "ok" and proxy.store.all_current(harness.EXT)
    assert rejections(proxy.store) == ()  # the old rejection blames the secrets no more


def test_a_newer_push_replaces_a_waiting_one(proxy: Proxy) -> None:
    proxy.publish("v1")
    proxy.push_round()
    proxy.publish("v2", extra=tls_extra(proxy, free_port()))
    proxy.push_round()
    assert proxy.status().waiting
    v3 = proxy.publish("v3")
    proxy.push_round()
    status = proxy.status()
    assert (status.serving, status.waiting, status.rejected) == (v3, "", "")
    assert proxy.get() == (200, "v3")
    deliver(proxy)  # the files of the replaced push change nothing
    proxy.push_round()
    assert proxy.get() == (200, "v3")


def test_the_waiting_status_parses_and_a_file_that_cannot_be_opened_blames_no_secret() -> None:
    d = "a" * 64
    status = wire.parse_status(f"swarmgate/3 status t1 waiting {d} - 1 2\nwaiting: 1 certificate files\n")
    assert status is not None and (status.waiting, status.serving, status.ok) == (d, "", True)
    message = (f'nginx: [emerg] cannot load certificate "/run/swarmgate-certs/{CERT_ID}.pem": BIO_new_file() failed '
               "(SSL: error:80000002:system library::No such file or directory)")
    assert unusable_certs_ids(message) == frozenset()
    loaded = (f'nginx: [emerg] cannot load certificate key "/run/swarmgate-certs/{KEY_ID}.pem": '
              "PEM_read_bio_PrivateKey() failed")
    assert unusable_certs_ids(loaded) == {KEY_ID}
