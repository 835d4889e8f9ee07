"""The live pass learns unusable TLS secrets from proxies' rejections and sets only their services aside
(planning/decide.learn_unusable_secrets feeding the pipeline; pure, no Docker)."""

from __future__ import annotations

from swarmgate.models.settings.config import load_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.planning.decide import learn_unusable_secrets
from swarmgate.operator.planning.desired import compute_desired
from tests.factories import node, service, swarm_secret, task
from tests.unit.test_render import GOLDEN

CONFIG = load_config(GOLDEN / "seed-config.toml")
BROKEN, KEY = swarm_secret("broken.crt"), swarm_secret("good.key")
GOOD = service("good", {"com.docker.lb.hosts": "good.local", "com.docker.lb.port": "8080"})
BAD = service("bad", {"com.docker.lb.hosts": "bad.local", "com.docker.lb.port": "8080",
                      "com.docker.lb.ssl_cert": "broken.crt", "com.docker.lb.ssl_key": "good.key"})
# The proxy service as Swarm stores it: secret references carry their IDs.
PROXY = service("interlock-proxy", {"swarmgate.managed-by": "swarmgate"})
PROXY["Spec"]["TaskTemplate"] = {"ContainerSpec": {"Secrets": [
    {"File": {"Name": f"/run/secrets/{s['Spec']['Name']}"}, "SecretName": s["Spec"]["Name"], "SecretID": s["ID"]}
    for s in (BROKEN, KEY)]}}
MESSAGE = ('nginx: [emerg] cannot load certificate "/run/secrets/broken.crt": PEM_read_bio_X509_AUX() failed '
           "(SSL: error:0480006C:PEM routines::no start line:Expecting: TRUSTED CERTIFICATE)")


def observed(*, secrets: tuple[dict[str, object], ...] = (BROKEN, KEY)) -> ObservedState:
    return ObservedState.from_api(services=[GOOD, BAD, PROXY], tasks=[task(GOOD, "w0", ports={8080: 31000})],
                                  nodes=[node("w0", "198.18.0.20")], secrets=list(secrets))


def test_a_rejection_naming_a_mounted_secret_sets_aside_only_the_service_using_it() -> None:
    state = observed()
    learnt = learn_unusable_secrets(CONFIG, state, (), [("default", MESSAGE)])
    assert learnt == {BROKEN["ID"]}
    table = compute_desired(CONFIG, state, unusable_secrets=learnt).extension("default").route_table
    assert [(s.service, s.kind) for s in table.set_aside] == [("bad", "unusable_secret")]
    assert [h.host for h in table.hosts] == ["good.local"]


def test_what_was_learnt_is_kept_until_the_secret_is_removed() -> None:
    kept = learn_unusable_secrets(CONFIG, observed(), {BROKEN["ID"]}, [])
    assert kept == {BROKEN["ID"]}
    assert learn_unusable_secrets(CONFIG, observed(secrets=(KEY,)), kept, []) == frozenset()


def test_rejections_of_unknown_extensions_or_without_a_secret_blame_nothing() -> None:
    other = 'nginx: [emerg] unknown directive "bogus" in /etc/nginx/nginx.conf:3'
    assert learn_unusable_secrets(CONFIG, observed(), (), [("nope", MESSAGE), ("default", other)]) == frozenset()


def test_a_ca_bundle_nginx_cannot_load_sets_aside_only_the_service_verifying_with_it() -> None:
    ca = swarm_secret("backend-ca.pem")
    verifying = service("verifying", {"com.docker.lb.hosts": "tls.local", "com.docker.lb.port": "8443",
                                      "com.docker.lb.ssl_backend": "true",
                                      "com.docker.lb.ssl_backend_tls_verify": "required",
                                      "swarmgate.ssl_backend_ca": "backend-ca.pem"}, host_ports=(8443,))
    proxy = service("interlock-proxy", {"swarmgate.managed-by": "swarmgate"})
    proxy["Spec"]["TaskTemplate"] = {"ContainerSpec": {"Secrets": [
        {"File": {"Name": "/run/secrets/backend-ca.pem"}, "SecretName": "backend-ca.pem", "SecretID": ca["ID"]}]}}
    tasks = [task(GOOD, "w0", ports={8080: 31000}), task(verifying, "w0", ports={8443: 31001})]
    state = ObservedState.from_api(services=[GOOD, verifying, proxy], tasks=tasks,
                                   nodes=[node("w0", "198.18.0.20")], secrets=[ca])
    assert compute_desired(CONFIG, state).extension("default").route_table.secrets == ("backend-ca.pem",)
    message = ('2026/12/07 05:07:30 [emerg] 27063#27063: SSL_CTX_load_verify_locations('
               '"/run/secrets/backend-ca.pem") failed (SSL: error:05800088:x509 certificate routines::no certificate '
               "or crl found)")
    learnt = learn_unusable_secrets(CONFIG, state, (), [("default", message)])
    assert learnt == {ca["ID"]}
    table = compute_desired(CONFIG, state, unusable_secrets=learnt).extension("default").route_table
    assert [(s.service, s.kind) for s in table.set_aside] == [("verifying", "unusable_secret")]
    assert [h.host for h in table.hosts] == ["good.local"] and table.secrets == ()


def test_a_courier_copy_of_a_ca_bundle_names_its_id_and_no_spec_is_needed() -> None:
    """In hitless delivery nginx reads the courier's `/run/swarmgate-certs/<ID>.pem`: the message
    names the ID itself, and a file that is not there (a system-library error) blames nobody."""
    ca = swarm_secret("backend-ca.pem")
    state = ObservedState.from_api(services=[GOOD], tasks=[task(GOOD, "w0", ports={8080: 31000})],
                                   nodes=[node("w0", "198.18.0.20")], secrets=[ca])
    loaded = (f'[emerg] SSL_CTX_load_verify_locations("/run/swarmgate-certs/{ca["ID"]}.pem") failed '
              "(SSL: error:05800088:x509 certificate routines::no certificate or crl found)")
    absent = (f'[emerg] SSL_CTX_load_verify_locations("/run/swarmgate-certs/{ca["ID"]}.pem") failed '
              "(SSL: error:80000002:system library::No such file or directory)")
    assert learn_unusable_secrets(CONFIG, state, (), [("default", loaded)]) == {ca["ID"]}
    assert learn_unusable_secrets(CONFIG, state, (), [("default", absent)]) == frozenset()
