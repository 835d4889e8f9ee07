"""The leader's traffic reads against the real agent on loopback (the harness of
tests/unit/test_agent_traffic.py): the poller takes the pusher's pinned client, reads the file the
agent serves at /swarmgate/v3/traffic, and the ledger counts exactly the requests of a known status
mix; a standby reads nothing and keeps nothing."""

from __future__ import annotations

from collections import Counter

from swarmgate.operator.delivery.traffic_ledger import TrafficLedger
from swarmgate.operator.delivery.traffic_poller import TrafficPoller
from tests.unit import test_agent_traffic as traffic
from tests.unit.test_agent_traffic import Site

pytestmark = traffic.pytestmark
_stop_signals_not_ignored = traffic._stop_signals_not_ignored
workdir = traffic.workdir
site = traffic.site


def read(poller: TrafficPoller) -> None:
    for future in poller.round():
        future.result(timeout=10)


def test_the_leader_reads_the_agents_counters_over_the_channel_and_counts_each_request_once(site: Site) -> None:
    proxy = site.proxy
    proxy.aim(proxy.task)
    proxy.push_round()  # the pusher reads the task's status: its key generation is known
    site.push("one", 1)
    want = site.mix(2)
    served = traffic.counted(proxy, want)
    poller = TrafficPoller(ledger := TrafficLedger(), proxy.pusher.leading_clients)
    read(poller)
    read(poller)  # the same file again: nothing counted twice
    got: Counter[tuple[str, str]] = Counter()
    for task, (extension, host, path, service), c in ledger.series():
        assert (task, extension, service) == (proxy.task, "default", "-")  # no route table given: no service names
        for code, n in c.requests.items():
            got[(host + path if host != "-" else "-", code)] += n
    assert got == Counter({(key, code): n for (key, _, code), n in want.items()})
    assert sum(c.bytes_sent for _, _, c in ledger.series()) == sum(v[1] for v in served.counts.values())

    more = site.mix(1)
    traffic.counted(proxy, want + more)
    read(poller)
    total = sum(n for _, _, c in ledger.series() for n in c.requests.values())
    assert total == sum((want + more).values())

    proxy.term = None  # this operator stood down
    read(poller)
    assert ledger.series() == []
    poller.stop()
