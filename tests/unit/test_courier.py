"""The certificate courier, planned (pure, no Docker): created with the first TLS host, updated when a
new secret ID is needed, an ID dropped only once every proxy task serves the current config, and the
proxy's spec untouched by any of it. Plain delivery keeps the secrets in the proxy's spec."""

from __future__ import annotations

import copy
from typing import Any, cast

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import CHANNEL_FINGERPRINT_LABEL, CHANNEL_SECRET_NAME
from swarmgate.operator.planning.actions import CreateService, PublishProxyConfig, RemoveCourier, UpdateService
from swarmgate.operator.planning.decide import Reported, decide_pass
from swarmgate.operator.planning.desired import DesiredState, ExtensionDesired, build_desired
from swarmgate.operator.planning.holds import record_attempts
from swarmgate.operator.planning.plan import plan
from swarmgate.operator.planning.service_spec import ServiceSpec
from swarmgate.renderers.nginx import render_nginx
from tests import factories as f
from tests.unit.test_plan import RUNTIME, config, kinds

TLS_HOST = "secure.local"


def tls_service(cert: str, key: str) -> dict[str, Any]:
    return f.service("secure", {"com.docker.lb.hosts": TLS_HOST, "com.docker.lb.port": "8080",
                                "com.docker.lb.ssl_cert": cert, "com.docker.lb.ssl_key": key})


def secret_id(name: str) -> str:
    return str(f.swarm_secret(name)["ID"])


def stored(spec: ServiceSpec, sid: str, *, version: int = 40) -> dict[str, Any]:
    """A service as the Engine returns it: each secret reference with the ID Swarm filled in."""
    raw = cast(dict[str, Any], copy.deepcopy(spec))
    for ref in raw["TaskTemplate"]["ContainerSpec"]["Secrets"]:
        ref["SecretID"] = secret_id(ref["SecretName"])
    return {"ID": sid, "Version": {"Index": version}, "Spec": raw, "CreatedAt": f.CREATED}


def state(*services: dict[str, Any], secrets: tuple[str, ...], configs: tuple[dict[str, Any], ...] = (),
          extra_tasks: tuple[dict[str, Any], ...] = ()) -> ObservedState:
    demo = f.service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
    routed = [s for s in services if s["Spec"]["Name"] == "secure"]
    nodes = [f.node("mgr-0", "198.18.0.11", role="manager"),
             f.node("lb-00", "198.18.0.12", labels={"nodetype": "loadbalancer"})]
    tasks = [f.task(s, "lb-00", ports={8080: 30001 + i}) for i, s in enumerate([demo, *routed])]
    return ObservedState.from_api(
        services=[demo, *services], tasks=[*tasks, *extra_tasks], nodes=nodes, configs=configs,
        secrets=[f.swarm_secret(CHANNEL_SECRET_NAME, labels={CHANNEL_FINGERPRINT_LABEL: "ab" * 32}),
                 *(f.swarm_secret(n) for n in secrets)])


EXTRA = '\n  ProxyConstraints = ["node.labels.nodetype==loadbalancer"]\n'


def desired(observed: ObservedState, served: dict[str, str] | None = None, extra: str = EXTRA) -> DesiredState:
    return build_desired(config(extra), observed, runtime=RUNTIME, served=served)


def converged(secrets: tuple[str, ...], cert: str, key: str) -> tuple[ObservedState, ExtensionDesired]:
    """The Swarm after a pass applied everything for `secure` with cert/key (proxy and courier stored)."""
    first = state(tls_service(cert, key), secrets=secrets)
    ext = desired(first).extension("default")
    assert ext.proxy_spec is not None and ext.courier_spec is not None
    configs = tuple(f.swarm_config(c.name, c.data, labels=c.labels) for c in ext.configs)
    after = state(tls_service(cert, key), stored(ext.proxy_spec, "proxy1"), stored(ext.courier_spec, "courier1"),
                  secrets=secrets, configs=configs)
    return after, ext


def courier_secrets(spec: Any) -> list[tuple[str, str]]:
    return [(r["SecretName"], r["File"]["Name"]) for r in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]]


def test_the_first_tls_host_creates_the_courier_and_the_proxy_mounts_no_tls_secret() -> None:
    observed = state(tls_service("web.crt", "web.key"), secrets=("web.crt", "web.key"))
    ext = desired(observed).extension("default")
    assert ext.proxy_spec is not None and ext.courier_spec is not None
    proxy = ext.proxy_spec["TaskTemplate"]["ContainerSpec"]
    assert [r["SecretName"] for r in proxy["Secrets"]] == [CHANNEL_SECRET_NAME]
    assert {"Type": "volume", "Source": "interlock-proxy-certs", "Target": "/run/swarmgate-certs",
            "ReadOnly": True} in proxy["Mounts"]
    courier = ext.courier_spec
    assert courier["Name"] == "interlock-proxy-certs"
    assert courier["Mode"] == {"Global": {}}
    assert courier["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.nodetype==loadbalancer"]
    assert courier["TaskTemplate"]["ContainerSpec"]["Image"] == "swarmgate/nginx:lab"
    assert courier["TaskTemplate"]["ContainerSpec"]["Mounts"] == [
        {"Type": "volume", "Source": "interlock-proxy-certs", "Target": "/certs"}]
    assert courier["Labels"]["swarmgate.managed-by"] == "swarmgate"
    assert courier["Labels"]["swarmgate.kind"] == "courier"
    assert sorted(courier_secrets(courier)) == sorted(
        [(n, f"/run/secrets/{secret_id(n)}") for n in ("web.crt", "web.key")])
    # nginx reads the courier's copies, by ID.
    assert f"ssl_certificate /run/swarmgate-certs/{secret_id('web.crt')}.pem;" in ext.rendered.text
    assert f"ssl_certificate_key /run/swarmgate-certs/{secret_id('web.key')}.pem;" in ext.rendered.text
    assert "/run/secrets/" not in ext.rendered.text
    actions = plan(desired(observed), observed, published={})
    created = [a for a in actions if isinstance(a, CreateService)]
    assert [(a.role, a.spec["Name"]) for a in created] == [("courier", "interlock-proxy-certs"),
                                                           ("proxy", "interlock-proxy")]
    # The courier is on its way before the config that needs its files is pushed.
    assert kinds(actions).index("CreateService") < kinds(actions).index("PublishProxyConfig")


def test_no_tls_host_no_courier() -> None:
    ext = desired(state(secrets=())).extension("default")
    assert ext.courier_spec is None


def test_a_user_constraint_on_the_proxy_places_the_courier_too() -> None:
    observed, _ = converged(("web.crt", "web.key"), "web.crt", "web.key")
    proxy = next(s for s in observed.services if s.name == "interlock-proxy")
    spec = copy.deepcopy(dict(proxy.spec))
    spec["TaskTemplate"]["Placement"]["Constraints"] = [*spec["TaskTemplate"]["Placement"]["Constraints"],
                                                        "node.hostname!=lb-01"]
    courier = next(s for s in observed.services if s.name == "interlock-proxy-certs")
    again = state(tls_service("web.crt", "web.key"), {"ID": "proxy1", "Version": {"Index": 41}, "Spec": spec,
                                                      "CreatedAt": f.CREATED},
                  {"ID": "courier1", "Version": {"Index": 40}, "Spec": dict(courier.spec), "CreatedAt": f.CREATED},
                  secrets=("web.crt", "web.key"))
    spec_now = desired(again).extension("default").courier_spec
    assert spec_now is not None
    assert spec_now["TaskTemplate"]["Placement"]["Constraints"] == ["node.hostname!=lb-01",
                                                                    "node.labels.nodetype==loadbalancer"]


def test_a_converged_courier_is_left_alone() -> None:
    observed, ext = converged(("web.crt", "web.key"), "web.crt", "web.key")
    actions = plan(desired(observed), observed, published={"default": ext.rendered.digest})
    assert kinds(actions) == ["NoOp"]


def test_a_rotation_updates_only_the_courier_and_keeps_the_old_ids_until_every_proxy_is_current() -> None:
    all_secrets = ("web.crt", "web.key", "web2.crt", "web2.key")
    before, old = converged(all_secrets, "web.crt", "web.key")
    owned = [{"ID": s.id, "Version": {"Index": s.version}, "Spec": dict(s.spec), "CreatedAt": f.CREATED}
             for s in before.services if s.name.startswith("interlock-proxy")]
    rotated = state(tls_service("web2.crt", "web2.key"), *owned, secrets=all_secrets,
                    configs=tuple(f.swarm_config(c.name, c.data, labels=dict(c.labels)) for c in before.configs))
    new = desired(rotated, served={"default": old.rendered.digest}).extension("default")
    actions = plan(desired(rotated, served={"default": old.rendered.digest}), rotated,
                   published={"default": old.rendered.digest})
    assert kinds(actions) == ["UpdateService", "PublishProxyConfig"]
    update, publish = actions
    assert isinstance(update, UpdateService) and update.role == "courier" and update.service_id == "courier1"
    assert isinstance(publish, PublishProxyConfig) and publish.digest == new.rendered.digest
    # The union: a proxy task restarting from its saved config still finds the old files.
    assert sorted(n for n, _ in courier_secrets(update.spec)) == sorted(all_secrets)
    # Once every proxy task serves the new config, the old IDs go.
    current = desired(rotated, served={"default": new.rendered.digest}).extension("default")
    assert current.courier_spec is not None
    assert sorted(n for n, _ in courier_secrets(current.courier_spec)) == ["web2.crt", "web2.key"]


def test_an_update_of_the_courier_is_not_remembered_as_the_proxys_attempt() -> None:
    _, ext = converged(("web.crt", "web.key"), "web.crt", "web.key")
    assert ext.courier_spec is not None
    attempted: dict[str, str] = {}
    record_attempts([CreateService("default", ext.courier_spec, role="courier")], attempted)
    assert attempted == {}


def test_plain_delivery_keeps_the_secrets_in_the_proxy_spec_and_has_no_courier() -> None:
    observed = state(tls_service("web.crt", "web.key"), secrets=("web.crt", "web.key"))
    ext = desired(observed, extra=EXTRA + "  HitlessServiceUpdate = false\n").extension("default")
    assert ext.courier_spec is None and ext.proxy_spec is not None
    assert sorted((r["SecretName"], r["File"]["Name"]) for r in ext.proxy_spec["TaskTemplate"]["ContainerSpec"]
                  ["Secrets"]) == [("web.crt", "/run/secrets/web.crt"), ("web.key", "/run/secrets/web.key")]
    assert "ssl_certificate /run/secrets/web.crt;" in ext.rendered.text


def test_the_tls_file_filter_without_paths_names_swarms_mount() -> None:
    observed = state(tls_service("web.crt", "web.key"), secrets=("web.crt", "web.key"))
    ext = desired(observed).extension("default")
    cfg = config(EXTRA).extensions["default"]
    text = render_nginx(cfg, ext.route_table, server_info="x").text
    assert "ssl_certificate_key /run/secrets/web.key;" in text


def test_rejections_naming_courier_files_set_the_service_aside_by_id() -> None:
    observed = state(tls_service("web.crt", "web.key"), f.service("other", {
        "com.docker.lb.hosts": "other.local", "com.docker.lb.port": "8080",
        "com.docker.lb.ssl_cert": "o.crt", "com.docker.lb.ssl_key": "o.key"}), secrets=("web.crt", "web.key",
                                                                                         "o.crt", "o.key"))
    bad_pem = (f'nginx: [emerg] cannot load certificate "/run/swarmgate-certs/{secret_id("web.crt")}.pem": '
               "PEM_read_bio_X509_AUX() failed (SSL: error:0480006C:PEM routines::no start line)")
    late = (f"certificate file not delivered: /run/swarmgate-certs/{secret_id('o.key')}.pem\n"
            "(waited 120 s for the certificate courier to bring them)")
    decision = decide_pass(config(EXTRA), observed, reported=Reported(rejections=(("default", bad_pem),
                                                                                  ("default", late))))
    aside = {(s.service, s.kind) for s in decision.desired.extension("default").route_table.set_aside}
    assert aside == {("secure", "unusable_secret"), ("other", "undelivered_secret")}
    assert decision.memory.unusable_secrets == {secret_id("web.crt")}
    assert decision.memory.undelivered_secrets == {secret_id("o.key")}


def test_a_verified_backends_ca_bundle_travels_by_courier_too() -> None:
    """`ssl_backend_tls_verify=required` names a CA bundle secret: in hitless mode nginx reads the
    courier's copy, the courier mounts it, and the proxy's spec mounts it no more than a certificate."""
    verified = f.service("secure", {"com.docker.lb.hosts": TLS_HOST, "com.docker.lb.port": "8080",
                                    "com.docker.lb.ssl_backend": "true",
                                    "com.docker.lb.ssl_backend_tls_verify": "required",
                                    "swarmgate.ssl_backend_ca": "backend-ca.pem"})
    ext = desired(state(verified, secrets=("backend-ca.pem",))).extension("default")
    assert ext.proxy_spec is not None and ext.courier_spec is not None
    assert ext.route_table.set_aside == ()
    ca = secret_id("backend-ca.pem")
    assert courier_secrets(ext.courier_spec) == [("backend-ca.pem", f"/run/secrets/{ca}")]
    proxy_secrets = [r["SecretName"] for r in ext.proxy_spec["TaskTemplate"]["ContainerSpec"].get("Secrets", [])]
    assert proxy_secrets == [CHANNEL_SECRET_NAME]
    assert f"proxy_ssl_trusted_certificate /run/swarmgate-certs/{ca}.pem;" in ext.rendered.text
    assert "/run/secrets/backend-ca.pem" not in ext.rendered.text


def test_switching_to_plain_delivery_empties_the_courier_then_removes_it_once_its_tasks_dropped_their_files(
) -> None:
    plain = EXTRA + "  HitlessServiceUpdate = false\n"
    hitless, ext = converged(("web.crt", "web.key"), "web.crt", "web.key")
    switched = desired(hitless, extra=plain).extension("default")
    assert switched.courier_spec is not None and courier_secrets(switched.courier_spec) == []
    actions = plan(desired(hitless, extra=plain), hitless, published={})
    courier_updates = [a for a in actions if isinstance(a, UpdateService) and a.role == "courier"]
    assert len(courier_updates) == 1 and not any(isinstance(a, RemoveCourier) for a in actions)

    def with_courier(spec: ServiceSpec, task_spec: ServiceSpec) -> ObservedState:
        """The Swarm with the courier stored as `spec`, and one running courier task made from `task_spec`."""
        assert ext.proxy_spec is not None
        configs = tuple(f.swarm_config(c.name, c.data, labels=c.labels) for c in ext.configs)
        return state(tls_service("web.crt", "web.key"), stored(ext.proxy_spec, "proxy1"), stored(spec, "courier1"),
                     secrets=("web.crt", "web.key"), configs=configs,
                     extra_tasks=(f.task(stored(task_spec, "courier1"), "lb-00"),))

    # Emptied, but a task of the older spec (with its key files) still runs: not yet.
    emptied = switched.courier_spec
    assert emptied is not None and ext.courier_spec is not None
    draining = with_courier(emptied, ext.courier_spec)
    assert not any(isinstance(a, RemoveCourier) for a in plan(desired(draining, extra=plain), draining, published={}))
    # Every running task has the empty spec: the courier goes.
    drained = with_courier(emptied, emptied)
    removes = [a for a in plan(desired(drained, extra=plain), drained, published={}) if isinstance(a, RemoveCourier)]
    assert removes == [RemoveCourier("default", "courier1", "interlock-proxy-certs")]
    # Hitless again: the courier is kept (and filled), never removed.
    assert not any(isinstance(a, RemoveCourier) for a in plan(desired(drained), drained, published={}))


def test_a_service_by_the_couriers_name_that_is_not_ours_is_never_emptied_or_removed() -> None:
    theirs = f.service("interlock-proxy-certs", {})
    theirs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"] = [
        {"SecretName": "web.key", "SecretID": secret_id("web.key"), "File": {"Name": "x"}}]
    observed = state(tls_service("web.crt", "web.key"), theirs, secrets=("web.crt", "web.key"))
    plain = desired(observed, extra=EXTRA + "  HitlessServiceUpdate = false\n")
    assert plain.extension("default").courier_spec is None
    actions = plan(plain, observed, published={})
    assert not any(isinstance(a, RemoveCourier) or (isinstance(a, UpdateService) and a.role == "courier")
                   for a in actions)
