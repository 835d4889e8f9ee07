"""Certificate planning: what a secret's labels say, which hosts are due an order, the backoff after
failures, which certificates are obsolete (pure: every `now` is given)."""

from __future__ import annotations

import datetime
import hashlib
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmgate.models.routing.acme_hosts import issuable
from swarmgate.models.swarm.ownership import KIND_LABEL, OWNER_LABEL
from swarmgate.operator.planning.certificates import (
    HOST_LABEL,
    MAX_BACKOFF,
    NOT_AFTER_LABEL,
    NOT_BEFORE_LABEL,
    SHA256_LABEL,
    AcmeMemory,
    Failure,
    IssuedCert,
    Order,
    describe,
    due,
    issued_from,
    labels_for,
    next_due,
    obsolete,
    secret_data,
    secret_name,
    serving,
)

UTC = datetime.UTC
T0 = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
DIR = "https://acme.example/directory"
OTHER_DIR = "https://staging.acme.example/directory"
DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)
NONE = AcmeMemory()
SWARM_SECRET_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")


def cert(host: str = "shop.example.com", start: datetime.datetime = T0, lifetime: datetime.timedelta = 90 * DAY,
         directory: str = DIR, tag: str = "a") -> IssuedCert:
    sha = (tag * 64)[:64] if re.fullmatch("[0-9a-f]+", tag) else "0" * 64
    return IssuedCert(host, start, start + lifetime, sha, secret_name(host, sha), directory)


# --- labels ---------------------------------------------------------------------------------------


def test_labels_round_trip() -> None:
    c = cert()
    assert IssuedCert.from_labels(c.secret_name, labels_for(c)) == c
    assert issued_from([(c.secret_name, labels_for(c))]) == (c,)


def test_labels_hold_public_facts_only() -> None:
    labels = labels_for(cert())
    assert labels[OWNER_LABEL] == "swarmgate" and labels[KIND_LABEL] == "acme-certificate"
    assert labels[NOT_BEFORE_LABEL] == "2025-03-01T12:00:00Z"
    assert labels[NOT_AFTER_LABEL] == "2025-05-30T12:00:00Z"
    assert all("PRIVATE" not in v for v in labels.values())


def broken(**changes: str | None) -> dict[str, str]:
    labels = labels_for(cert())
    for key, value in changes.items():
        name = {"host": HOST_LABEL, "nb": NOT_BEFORE_LABEL, "na": NOT_AFTER_LABEL, "sha": SHA256_LABEL,
                "owner": OWNER_LABEL, "kind": KIND_LABEL}[key]
        if value is None:
            labels.pop(name)
        else:
            labels[name] = value
    return labels


@pytest.mark.parametrize("labels", [
    pytest.param(broken(owner=None), id="not-owned"),
    pytest.param(broken(owner="someone"), id="owned-by-someone-else"),
    pytest.param(broken(kind="proxy-config"), id="another-kind"),
    pytest.param(broken(host=None), id="no-host"),
    pytest.param(broken(host="*.example.com"), id="wildcard-host"),
    pytest.param(broken(host="Shop.example.com"), id="upper-case-host"),
    pytest.param(broken(nb=None), id="no-not-before"),
    pytest.param(broken(nb="yesterday"), id="bad-not-before"),
    pytest.param(broken(na="2025-05-30T12:00:00"), id="not-after-without-zone"),
    pytest.param(broken(na="2025-03-01T12:00:00Z"), id="empty-lifetime"),
    pytest.param(broken(na="2025-02-01T12:00:00Z"), id="negative-lifetime"),
    pytest.param(broken(sha="abc"), id="short-digest"),
    pytest.param(broken(sha="G" * 64), id="not-hex"),
    pytest.param({}, id="no-labels"),
])
def test_bad_or_missing_labels_are_ignored(labels: dict[str, str]) -> None:
    assert IssuedCert.from_labels("swarmgate-acme-shop-aaaaaaaaaaaa", labels) is None


def test_a_secret_with_no_labels_at_all_is_ignored() -> None:
    assert IssuedCert.from_labels("x", None) is None
    good = cert()
    assert issued_from([("x", None), ("y", {"a": "b"}), (good.secret_name, labels_for(good))]) == (good,)


def test_times_with_another_zone_are_read_as_utc() -> None:
    labels = broken(nb="2025-03-01T13:00:00+01:00")
    parsed = IssuedCert.from_labels("n", labels)
    assert parsed is not None and parsed.not_before == T0 and parsed.not_before.tzinfo == UTC


@pytest.mark.parametrize("host", ["shop.example.com", "a.b", "x" * 63 + "." + "y" * 63 + ".example.com",
                                  "a-b.c-d.example", ("l" * 60 + ".") * 4 + "com"])
def test_secret_names_are_swarm_names_of_at_most_64_chars(host: str) -> None:
    name = secret_name(host, "f" * 64)
    assert len(name) <= 64 and SWARM_SECRET_NAME.match(name), name
    assert name.startswith("swarmgate-acme-") and name.endswith("-ffffffffffff")


@pytest.mark.parametrize(("host", "ok"), [
    ("shop.example.com", True), ("a.b", True), ("xn--bcher-kva.example", True),
    ("localhost", False), ("*.example.com", False), ("Shop.Example.com", False), ("10.0.0.1", False),
    ("-a.example", False), ("a-.example", False), ("a..example", False), ("swarmgate-control.invalid", False),
    ("a" * 64 + ".example", False), ("x." * 126 + "com", False), ("", False), ("shop.example.com.", False),
])
def test_issuable_hosts(host: str, ok: bool) -> None:
    assert issuable(host) is ok


def self_signed(host: str, not_before: datetime.datetime, not_after: datetime.datetime) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return leaf.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_describe_reads_the_leaf_of_a_chain() -> None:
    leaf, key_pem = self_signed("shop.example.com", T0, T0 + 90 * DAY)
    issuer, _ = self_signed("issuer", T0 - DAY, T0 + 900 * DAY)
    c = describe("shop.example.com", leaf + issuer, DIR)
    assert (c.host, c.not_before, c.not_after, c.directory) == ("shop.example.com", T0, T0 + 90 * DAY, DIR)
    der = x509.load_pem_x509_certificate(leaf.encode()).public_bytes(serialization.Encoding.DER)
    assert c.sha256 == hashlib.sha256(der).hexdigest()
    assert c.secret_name == secret_name("shop.example.com", c.sha256)
    assert IssuedCert.from_labels(c.secret_name, labels_for(c)) == c
    data = secret_data(leaf + issuer, key_pem)
    assert data.count(b"BEGIN CERTIFICATE") == 2 and data.endswith(b"-----END PRIVATE KEY-----\n")


# --- due ------------------------------------------------------------------------------------------


def test_a_host_without_a_certificate_is_due() -> None:
    assert due(["shop.example.com"], [], T0, NONE, DIR) == [Order("shop.example.com", "missing")]


def test_a_fresh_certificate_is_not_ordered_again() -> None:
    c = cert()
    for now in (T0, T0 + DAY, T0 + 59 * DAY, c.renew_at - datetime.timedelta(seconds=1)):
        assert due(["shop.example.com"], [c], now, NONE, DIR) == []


def test_renewal_at_two_thirds_of_the_lifetime() -> None:
    c = cert()
    assert c.renew_at == T0 + 60 * DAY
    assert due(["shop.example.com"], [c], T0 + 60 * DAY, NONE, DIR) == [Order("shop.example.com", "renewal")]
    assert due(["shop.example.com"], [c], T0 + 90 * DAY, NONE, DIR) == [Order("shop.example.com", "missing")]


def test_a_certificate_not_valid_yet_counts_as_fresh() -> None:
    # The CA's clock is a little ahead of ours: ordering again would not help.
    assert due(["shop.example.com"], [cert(start=T0 + 5 * MINUTE)], T0, NONE, DIR) == []


def test_the_newest_certificate_decides() -> None:
    old, new = cert(tag="a"), cert(start=T0 + 60 * DAY, tag="b")
    assert due(["shop.example.com"], [old, new], T0 + 70 * DAY, NONE, DIR) == []
    assert due(["shop.example.com"], [new, old], T0 + 70 * DAY, NONE, DIR) == []


def test_a_certificate_from_another_directory_does_not_count() -> None:
    staging = cert(directory=OTHER_DIR)
    assert due(["shop.example.com"], [staging], T0 + DAY, NONE, DIR) == [Order("shop.example.com", "missing")]


def test_due_is_sorted_and_ignores_duplicates() -> None:
    hosts = ["b.example", "a.example", "b.example", "c.example"]
    assert [o.host for o in due(hosts, [cert("c.example")], T0, NONE, DIR)] == ["a.example", "b.example"]


def test_backoff_doubles_from_one_minute_to_six_hours() -> None:
    memory, waits = NONE, []
    now = T0
    for _ in range(12):
        memory = memory.failed("shop.example.com", now, "validation failed")
        retry_at = memory.failures["shop.example.com"].retry_at
        waits.append((retry_at - now) / MINUTE)
        assert due(["shop.example.com"], [], retry_at - datetime.timedelta(seconds=1), memory, DIR) == []
        assert due(["shop.example.com"], [], retry_at, memory, DIR) == [
            Order("shop.example.com", "missing", failures=memory.failures["shop.example.com"].count)]
        now = retry_at
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 360, 360, 360]


def test_backoff_is_per_host_and_ends_with_a_success() -> None:
    memory = NONE.failed("a.example", T0, "x")
    assert due(["a.example", "b.example"], [], T0, memory, DIR) == [Order("b.example", "missing")]
    assert memory.succeeded("a.example") == NONE
    assert memory.succeeded("b.example") is memory


def test_a_huge_failure_count_stays_capped() -> None:
    assert Failure(10**9, T0, "x").retry_at == T0 + MAX_BACKOFF


def test_memory_forgets_hosts_no_longer_wanted() -> None:
    memory = NONE.failed("a.example", T0, "x").failed("b.example", T0, "y")
    assert set(memory.keep_only(["b.example"]).failures) == {"b.example"}
    assert memory.keep_only(["a.example", "b.example", "c.example"]) is memory


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        due(["a.example"], [], datetime.datetime(2025, 1, 1), NONE, DIR)


# --- next_due -------------------------------------------------------------------------------------


def test_next_due_is_the_earliest_renewal_or_end_of_backoff() -> None:
    c = cert("a.example")
    memory = NONE.failed("b.example", T0, "x")
    assert next_due(["a.example", "b.example"], [c], T0, memory, DIR) == T0 + MINUTE
    assert next_due(["a.example"], [c], T0, memory, DIR) == T0 + 60 * DAY
    assert next_due([], [c], T0, memory, DIR) is None
    # Due now: `due` says so; nothing further ahead.
    assert next_due(["c.example"], [], T0, NONE, DIR) is None


def test_next_due_waits_for_the_backoff_even_past_renewal() -> None:
    c = cert("a.example")
    memory = NONE.failed("a.example", T0 + 60 * DAY, "x")
    assert next_due(["a.example"], [c], T0 + 60 * DAY, memory, DIR) == T0 + 60 * DAY + MINUTE


# --- serving and obsolete -------------------------------------------------------------------------


def test_serving_prefers_the_configured_directory_then_the_latest() -> None:
    staging, old, new = cert(directory=OTHER_DIR, tag="c"), cert(tag="a"), cert(start=T0 + 60 * DAY, tag="b")
    assert serving("shop.example.com", [staging], T0 + DAY, DIR) == staging
    assert serving("shop.example.com", [staging, old], T0 + DAY, DIR) == old
    assert serving("shop.example.com", [staging, old, new], T0 + 61 * DAY, DIR) == new
    assert serving("shop.example.com", [old], T0 + 91 * DAY, DIR) is None
    assert serving("other.example", [old], T0, DIR) is None


def test_unwanted_hosts_are_obsolete_at_once() -> None:
    c = cert()
    assert obsolete([], [c], T0) == [c]
    assert obsolete(["shop.example.com"], [c], T0) == []


def test_superseded_certificates_go_once_expired() -> None:
    old, new = cert(tag="a"), cert(start=T0 + 60 * DAY, tag="b")
    assert obsolete(["shop.example.com"], [old, new], T0 + 89 * DAY) == []
    assert obsolete(["shop.example.com"], [old, new], T0 + 90 * DAY) == [old]


def test_the_last_certificate_of_a_wanted_host_stays_even_expired() -> None:
    c = cert()
    assert obsolete(["shop.example.com"], [c], T0 + 365 * DAY) == []


def test_another_directorys_certificate_goes_once_superseded_and_expired() -> None:
    staging, prod = cert(directory=OTHER_DIR, tag="c"), cert(start=T0 + DAY, tag="b")
    assert obsolete(["shop.example.com"], [staging, prod], T0 + 2 * DAY) == []
    assert obsolete(["shop.example.com"], [staging, prod], T0 + 90 * DAY) == [staging]


# --- properties -----------------------------------------------------------------------------------

lifetimes = st.timedeltas(min_value=datetime.timedelta(seconds=3), max_value=400 * DAY)
offsets = st.timedeltas(min_value=-DAY, max_value=800 * DAY)


@settings(max_examples=300, deadline=None)
@given(lifetime=lifetimes, offset=offsets)
def test_a_host_is_due_exactly_from_two_thirds_of_its_lifetime(lifetime: datetime.timedelta,
                                                               offset: datetime.timedelta) -> None:
    c = cert(lifetime=lifetime)
    now = T0 + offset
    orders = due([c.host], [c], now, NONE, DIR)
    assert bool(orders) == (now >= c.renew_at)
    assert c.not_before + lifetime / 2 < c.renew_at < c.not_after
    if orders:
        assert orders[0].reason == ("renewal" if now < c.not_after else "missing")
    upcoming = next_due([c.host], [c], now, NONE, DIR)
    assert upcoming == (c.renew_at if now < c.renew_at else None)


@settings(max_examples=200, deadline=None)
@given(starts=st.lists(st.timedeltas(min_value=datetime.timedelta(0), max_value=30 * MINUTE), min_size=1,
                       max_size=6, unique=True),
       lifetime=st.timedeltas(min_value=datetime.timedelta(minutes=1), max_value=10 * MINUTE),
       offset=st.timedeltas(min_value=datetime.timedelta(0), max_value=60 * MINUTE),
       wanted=st.booleans())
def test_minute_lived_certificates_as_a_test_ca_issues(starts: list[datetime.timedelta],
                                                       lifetime: datetime.timedelta,
                                                       offset: datetime.timedelta, wanted: bool) -> None:
    certs = [cert(start=T0 + s, lifetime=lifetime, tag=f"{i:x}") for i, s in enumerate(starts)]
    now = T0 + offset
    hosts = ["shop.example.com"] if wanted else []
    gone = obsolete(hosts, certs, now)
    latest = max(certs, key=lambda c: (c.not_after, c.sha256))
    if wanted:
        # The newest is never deleted, and nothing unexpired is.
        assert latest not in gone and all(c.expired(now) for c in gone)
        assert sorted(set(certs) - set(gone)) == sorted(c for c in certs if c == latest or not c.expired(now))
        assert bool(due(hosts, certs, now, NONE, DIR)) == (now >= latest.renew_at)
    else:
        assert gone == sorted(certs)
        assert due(hosts, certs, now, NONE, DIR) == []
    # The listing's order never matters.
    assert obsolete(hosts, list(reversed(certs)), now) == gone
    assert due(hosts, list(reversed(certs)), now, NONE, DIR) == due(hosts, certs, now, NONE, DIR)
