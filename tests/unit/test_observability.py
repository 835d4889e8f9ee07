"""Metric values from reasons, agent reports and the proxy store (no Docker, no network)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from swarmgate.models.routing.labels import REASON_KINDS
from swarmgate.models.routing.routes import build_route_table, unclaimed_services
from swarmgate.models.settings.config import parse_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.telemetry import metrics
from swarmgate.operator.telemetry.observability import PassMetrics
from tests import factories as f


def sample(name: str, **labels: str) -> float | None:
    registry: CollectorRegistry = metrics.REGISTRY
    return registry.get_sample_value(name, labels)


HOST_PORT = {"com.docker.lb.hosts": "a.local", "com.docker.lb.port": "8080"}


def kind_of(labels: dict[str, str], *, host_ports: tuple[int, ...] = (8080,), cluster: str = "") -> str:
    """The kind the real label parser and route builder give a service set aside for these labels."""
    svc = f.service("svc", labels, host_ports=host_ports)
    observed = ObservedState.from_api(services=[svc], tasks=[], nodes=[])
    ext = parse_config(f'[Extensions.x]\nServiceCluster = "{cluster}"\nPublishMode = "host"\n',
                       source="t.toml").extensions["x"]
    table = build_route_table(observed, ext)
    asides = list(table.set_aside) or list(unclaimed_services(observed, [ext.service_cluster]))
    assert len(asides) == 1, asides
    return asides[0].kind


@pytest.mark.parametrize(
    ("labels", "options", "kind"),
    [
        ({**HOST_PORT, "com.docker.lb.port": "eighty"}, {}, "port"),
        ({"com.docker.lb.hosts": "a.local"}, {}, "port"),
        ({"com.docker.lb.port": "80"}, {}, "hosts"),
        ({**HOST_PORT, "com.docker.lb.hosts": "bad host!"}, {}, "hosts"),
        ({**HOST_PORT, "com.docker.lb.ssl_cert": "c"}, {}, "ssl_cert"),
        ({**HOST_PORT, "com.docker.lb.sticky_session_cookie": "a b;"}, {}, "sticky_session_cookie"),
        ({**HOST_PORT, "com.docker.lb.backend_mode": "vip"}, {}, "vip_backend"),
        ({**HOST_PORT, "com.docker.lb.ssl_passthrough": "maybe"}, {}, "ssl_passthrough"),
        (HOST_PORT, {"host_ports": ()}, "no_host_port"),
        ({**HOST_PORT, "com.docker.lb.service_cluster": "east"}, {"cluster": "west"}, "no_extension"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_set_aside_services_carry_a_closed_set_kind(labels: dict[str, str], options: dict[str, object],
                                                     kind: str) -> None:
    assert kind_of(labels, **options) == kind  # type: ignore[arg-type]
    assert kind in REASON_KINDS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_convergence_is_observed_once_from_publish_to_the_last_live_proxy_serving_it() -> None:
    clock, seen = Clock(), []
    store = ProxyState(clock=clock, on_converged=lambda c, s: seen.append((c, s)))
    store.record_status(cluster="x", task="t1", node="n1", hostname="lb-00", serving="")
    store.record_status(cluster="x", task="t2", node="n2", hostname="lb-01", serving="")
    store.publish("x", "conf", "d1")
    clock.now += 0.5
    store.record_status(cluster="x", task="t1", node="n1", hostname="lb-00", serving="d1", pushed=True)
    assert seen == []
    clock.now += 1.0
    store.record_status(cluster="x", task="t2", node="n2", hostname="lb-01", serving="d1", pushed=True)
    store.record_status(cluster="x", task="t2", node="n2", hostname="lb-01", serving="d1")
    assert seen == [("x", 1.5)]


def test_every_push_that_ends_counts_as_one_reload_by_result() -> None:
    reloads: list[tuple[str, bool]] = []
    store = ProxyState(on_reload=lambda c, ok: reloads.append((c, ok)))
    store.record_status(cluster="x", task="t1", node="n1", hostname="h", serving="d1", pushed=True)
    store.record_status(cluster="x", task="t1", node="n1", hostname="h", serving="d1", rejected="d2",
                        message="bad", pushed=True)
    store.record_status(cluster="x", task="t1", node="n1", hostname="h", serving="d1")  # a plain read
    assert reloads == [("x", True), ("x", False)]


def test_proxy_series_follow_live_tasks_and_their_digest() -> None:
    store = ProxyState()
    gauges = PassMetrics()
    store.publish("obs-a", "conf", "a" * 64)
    store.record_status(cluster="obs-a", task="t1", node="n1", hostname="lb-00", serving="a" * 64)
    store.record_status(cluster="obs-a", task="t2", node="n2", hostname="lb-01", serving="")
    gauges.record_proxies(store, ["obs-a"])
    assert sample("swarmgate_proxy_config_current", extension="obs-a", task="t1", node="lb-00") == 1
    assert sample("swarmgate_proxy_config_current", extension="obs-a", task="t2", node="lb-01") == 0
    assert sample("swarmgate_proxies_not_current", extension="obs-a") == 1
    assert sample("swarmgate_proxy_config_info", extension="obs-a", task="t2", node="lb-01",
                  digest="bootstrap") == 1

    store.record_status(cluster="obs-a", task="t2", node="n2", hostname="lb-01", serving="a" * 64)
    store.retain_tasks({"obs-a": ["t2"]})
    gauges.record_proxies(store, ["obs-a"])
    assert sample("swarmgate_proxy_config_current", extension="obs-a", task="t1", node="lb-00") is None
    assert sample("swarmgate_proxy_config_info", extension="obs-a", task="t1", node="lb-00",
                  digest="a" * 12) is None
    assert sample("swarmgate_proxy_config_info", extension="obs-a", task="t2", node="lb-01",
                  digest="bootstrap") is None
    assert sample("swarmgate_proxy_config_info", extension="obs-a", task="t2", node="lb-01",
                  digest="a" * 12) == 1
    assert sample("swarmgate_proxies_not_current", extension="obs-a") == 0


def test_every_metric_has_help_and_the_swarmgate_prefix() -> None:
    families = list(metrics.REGISTRY.collect())
    assert families
    for family in families:
        assert family.name.startswith("swarmgate_"), family.name
        assert family.documentation.strip(), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name

