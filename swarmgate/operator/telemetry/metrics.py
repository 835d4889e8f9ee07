"""Every Prometheus metric swarmgate exports, declared in one place (no I/O until scraped).

Names follow Prometheus conventions (`swarmgate_` prefix, `_total` counters, `_seconds` units) and
controller-runtime's reconcile metrics. Label values are closed sets or names the operator owns
(extension, proxy task, node): never a token, a label value from a user's service, or free text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from swarmgate import __version__
from swarmgate.operator.planning.retry import Outcome
from swarmgate.operator.telemetry.traffic_metrics import TrafficCollector

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD_INFO = Gauge("swarmgate_build_info", "swarmgate's version; always 1.", ["version"], registry=REGISTRY)
BUILD_INFO.labels(version=__version__).set(1)

RECONCILE_TOTAL = Counter(
    "swarmgate_reconcile_total", "Reconcile passes by result (success, error, requeue).", ["result"],
    registry=REGISTRY)
RECONCILE_SECONDS = Histogram(
    "swarmgate_reconcile_duration_seconds", "Time one reconcile pass took, observe to apply.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
LAST_SUCCESS = Gauge(
    "swarmgate_last_successful_reconcile_timestamp_seconds", "Unix time of the last pass that succeeded.",
    registry=REGISTRY)
ACTIONS_TOTAL = Counter(
    "swarmgate_actions_total", "Actions applied, by kind and result (ok, error).", ["kind", "result"],
    registry=REGISTRY)
DOCKER_ERRORS_TOTAL = Counter(
    "swarmgate_docker_api_errors_total", "Docker API calls that failed or could not connect.", registry=REGISTRY)
DOCKER_CALLS_TOTAL = Counter(
    "swarmgate_docker_api_calls_total", "Docker API calls made, by kind (read, write).", ["kind"],
    registry=REGISTRY)

ROUTES = Gauge("swarmgate_routes", "Hosts routed, per extension.", ["extension"], registry=REGISTRY)
UPSTREAMS = Gauge("swarmgate_upstreams", "Upstream addresses (running tasks) routed, per extension.",
                  ["extension"], registry=REGISTRY)
ROUTE_NOTICES = Gauge("swarmgate_route_notices", "Route notices in force (an overruled setting on a shared host, an "
                      "unknown label, a refused redirect, ...), per extension; \"\" for the configuration's own.",
                      ["extension"], registry=REGISTRY)
SET_ASIDE = Gauge("swarmgate_services_set_aside", "Services with lb labels that are not routed, by reason.",
                  ["extension", "reason"], registry=REGISTRY)

CONVERGENCE_SECONDS = Histogram(
    "swarmgate_convergence_seconds",
    "Time from a detected change to every proxy of the extension reporting that it serves the new config.",
    ["extension"], buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60), registry=REGISTRY)
PROXY_CURRENT = Gauge(
    "swarmgate_proxy_config_current", "1 if the proxy task serves the extension's current config, else 0.",
    ["extension", "task", "node"], registry=REGISTRY)
PROXY_SERVED = Gauge(
    "swarmgate_proxy_config_info", "The config digest (first 12 hex) each proxy task serves; always 1.",
    ["extension", "task", "node", "digest"], registry=REGISTRY)
PROXIES_NOT_CURRENT = Gauge(
    "swarmgate_proxies_not_current", "Proxy tasks that do not serve the extension's current config yet.",
    ["extension"], registry=REGISTRY)
RELOADS_TOTAL = Counter(
    "swarmgate_proxy_reloads_total", "Config reloads reported by the proxies' agents, by result (ok, error).",
    ["extension", "result"], registry=REGISTRY)
PROXY_STATUS_FORGED_TOTAL = Counter(
    "swarmgate_proxy_status_forged_total",
    "Statuses read from a proxy task's control server that do not carry the channel key's MAC.",
    ["extension", "node"], registry=REGISTRY)
PROXY_UPDATE_HELD = Gauge(
    "swarmgate_proxy_update_held",
    "1 while a change of the extension's proxy is held back, by reason (rolled_back: Swarm rolled back from "
    "that spec; nginx_rejected: nginx -t rejects the rendered config), else 0.",
    ["extension", "reason"], registry=REGISTRY)


LEADER = Gauge(
    "swarmgate_leader", "1 while this operator holds the leader lease and may write to the Swarm, 0 on standby.",
    ["identity"], registry=REGISTRY)
LEADER_TRANSITIONS_TOTAL = Counter(
    "swarmgate_leader_transitions_total",
    "Roles this operator took, the first one included, by role (leader, standby).",
    ["to"], registry=REGISTRY)
CERTIFICATE_EXPIRY = Gauge(
    "swarmgate_certificate_expiry_timestamp_seconds",
    "When the ACME certificate a host serves expires (its notAfter, Unix seconds), per extension and host.",
    ["extension", "host"], registry=REGISTRY)
ACME_ORDERS_TOTAL = Counter(
    "swarmgate_acme_orders_total", "ACME orders this operator finished, by result (issued, failed).",
    ["result"], registry=REGISTRY)
ACME_FAILURES = Gauge(
    "swarmgate_acme_consecutive_failures", "Failed ACME orders in a row, per host (0 after a success).",
    ["host"], registry=REGISTRY)
ACME_ORDERS_DEFERRED = Gauge(
    "swarmgate_acme_orders_deferred", "ACME orders due but held back by the order budget (ACMEOrdersPerHour).",
    registry=REGISTRY)

# Per-route traffic, read from the proxies by the leader (`delivery/traffic_poller.py`): requests by
# status class, request and upstream time histograms, bytes (`telemetry/traffic_metrics.py`). Not in
# REGISTRY: /metrics writes its families itself, after REGISTRY's (see `exposition`).
ROUTE_TRAFFIC = TrafficCollector()


def record_pass(outcome: Outcome, seconds: float) -> None:
    """Count a pass the way controller-runtime does: success, error, or requeue (look again soon)."""
    result = {Outcome.CONVERGED: "success", Outcome.CHANGED: "requeue"}.get(outcome, "error")
    RECONCILE_TOTAL.labels(result=result).inc()
    RECONCILE_SECONDS.observe(seconds)
    if result != "error":
        LAST_SUCCESS.set_to_current_time()


def exposition() -> bytes:
    return generate_latest(REGISTRY) + ROUTE_TRAFFIC.exposition()


def declared() -> list[Metric]:
    """Every metric family /metrics can show, those with no sample yet included."""
    return [*REGISTRY.collect(), *ROUTE_TRAFFIC.describe()]
