"""Golden renders of Interlock's documentation features that need more than host mode, each checked by
nginx -t with the modules it needs: overlay task and VIP upstreams, and SSL passthrough beside
terminated TLS (the stream module). Regenerate with `SWARMGATE_UPDATE_GOLDEN=1`."""

from __future__ import annotations

from pathlib import Path

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import nginx_check
from tests.factories import node, overlay_network, service, swarm_secret, task
from tests.support import check_golden

GOLDEN = Path(__file__).parent.parent / "golden"
HOST = Extension(name="default", publish_mode="host")
FRONT = overlay_network("front")
F = FRONT["Id"]


def parity_state() -> ObservedState:
    def lb(hosts: str, port: str = "8080", **more: str) -> dict[str, str]:
        return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": port,
                **{f"com.docker.lb.{k}": v for k, v in more.items()}}

    demo = service("demo", lb("demo.local"))
    web = service("web", lb("web.local"), host_ports=(), networks={F: "198.19.1.2"})
    api = service("api", lb("api.local", backend_mode="vip"), host_ports=(), networks={F: "198.19.1.9"})
    tls = service("tls", lb("tls.local", ssl_cert="tls.crt", ssl_key="tls.key"), host_ports=(),
                  networks={F: "198.19.1.20"})
    passthrough = service("pass", lb("pass.local,default", port="8443", ssl_passthrough="true"), host_ports=(),
                          networks={F: "198.19.1.30"})
    return ObservedState.from_api(
        services=[demo, web, api, tls, passthrough],
        tasks=[task(demo, "lb-00", ports={8080: 30000}),
               task(web, "wrk-0", addresses={F: "198.19.1.3"}), task(web, "wrk-1", slot=2, addresses={F: "198.19.1.4"}),
               task(api, "wrk-0", addresses={F: "198.19.1.10"}), task(tls, "wrk-1", addresses={F: "198.19.1.21"}),
               task(passthrough, "wrk-0", addresses={F: "198.19.1.31"})],
        nodes=[node("lb-00", "198.18.0.14"), node("wrk-0", "198.18.0.16"), node("wrk-1", "198.18.0.17")],
        secrets=[swarm_secret("tls.crt"), swarm_secret("tls.key")],
        networks=[FRONT],
    )


def test_overlay_vip_and_passthrough_render_matches_golden_file_and_passes_nginx_t() -> None:
    table = build_route_table(parity_state(), HOST)
    assert table.networks == (F,) and [p.host for p in table.passthrough] == ["default", "pass.local"]
    text = render_nginx(HOST, table, server_info="swarmgate/0.1.0 linux/amd64").text
    check_golden(GOLDEN / "parity.conf", text)
    nginx_check(text)


def test_without_passthrough_the_tls_port_stays_with_the_http_servers() -> None:
    observed = parity_state()
    table = build_route_table(ObservedState(services=tuple(s for s in observed.services if s.name != "pass"),
                                            tasks=observed.tasks, nodes=observed.nodes, secrets=observed.secrets,
                                            networks=observed.networks), HOST)
    text = render_nginx(HOST, table, server_info="swarmgate/0.1.0 linux/amd64").text
    assert "stream {" not in text and "modules-enabled" not in text and "listen 443 ssl;" in text


def test_nginx_status_is_on_the_default_server_as_in_interlock() -> None:
    text = render_nginx(HOST, build_route_table(parity_state(), HOST), server_info="swarmgate/0.1.0 linux/amd64").text
    default = text.split("listen 80 default_server;", 1)[1].split("    }\n    server {", 1)[0]
    # Interlock logs nothing of it; swarmgate counts it (its route is `-`, the default server's).
    assert ("location = /nginx_status {\n            stub_status;\n            access_log "
            "/var/run/swarmgate-traffic/traffic.log swarmgate_traffic buffer=64k flush=1s;") in default


def test_proxy_args_in_hitless_mode_are_reported_not_dropped_silently() -> None:
    from swarmgate.models.settings.config import Config
    from swarmgate.operator.planning.delivery_mode import delivery_notices

    config = Config.model_validate({"Extensions": {"default": {"PublishMode": "host", "ProxyArgs": ["-g", "x"]}}})
    assert any("ProxyArgs are not applied" in n for n in delivery_notices(config))
    plain = Config.model_validate({"Extensions": {"default": {"PublishMode": "host", "ProxyArgs": ["-g", "x"],
                                                              "HitlessServiceUpdate": False}}})
    assert not any("ProxyArgs" in n for n in delivery_notices(plain))


def test_route_findings_carry_every_notice_and_set_aside_service_for_status() -> None:
    from swarmgate.models.settings.config import Config
    from swarmgate.operator.planning.desired import compute_desired
    from swarmgate.operator.planning.findings import findings_text, route_findings

    config = Config.model_validate({"Extensions": {"default": {"PublishMode": "host"}}})
    typo = service("typo", {"com.docker.lb.hosts": "typo.local", "com.docker.lb.port": "8080",
                            "com.docker.lb.hots": "x"})
    east = service("east", {"com.docker.lb.hosts": "east.local", "com.docker.lb.port": "8080",
                            "com.docker.lb.service_cluster": "east"})
    findings = route_findings(compute_desired(config, ObservedState.from_api(services=[typo, east], tasks=[],
                                                                             nodes=[])))
    assert findings["notices"]["default"] == [
        "service typo: label 'com.docker.lb.hots' is not known to swarmgate; ignored "
        "(did you mean com.docker.lb.hosts?)"]
    assert [(s["extension"], s["service"], s["kind"]) for s in findings["set_aside"]] == [("", "east", "no_extension")]
    text = findings_text(findings)
    assert any(line.startswith("notice (default): service typo") for line in text)
    assert any(line.startswith("set aside (no extension): east") for line in text)


def test_interlocks_custom_template_example_in_jinja2_renders_and_passes_nginx_t() -> None:
    """manifests/custom-template.conf.j2 (README, "Migrating from Interlock"), as a `Template` would."""
    template = (Path(__file__).parent.parent.parent / "manifests" / "custom-template.conf.j2").read_text()
    table = build_route_table(parity_state(), HOST)
    text = render_nginx(HOST, table, server_info="swarmgate/0.1.0 linux/amd64", template_text=template).text
    assert "server_name web.local;" in text and "server 198.19.1.3:8080;" in text
    assert "swarmgate-control.invalid" in text and "ssl_certificate /run/secrets/tls.crt;" in text
    nginx_check(text)


def test_https_default_backend_answers_unknown_names_with_its_own_certificate() -> None:
    fallback = service("fallback", {"com.docker.lb.hosts": "fallback.local", "com.docker.lb.port": "8080",
                                    "com.docker.lb.default_backend": "true", "com.docker.lb.ssl_cert": "fb.crt",
                                    "com.docker.lb.ssl_key": "fb.key"})
    observed = ObservedState.from_api(services=[fallback], tasks=[task(fallback, "wrk-0", ports={8080: 30090})],
                                      nodes=[node("wrk-0", "198.18.0.16")],
                                      secrets=[swarm_secret("fb.crt"), swarm_secret("fb.key")])
    text = render_nginx(HOST, build_route_table(observed, HOST), server_info="swarmgate/0.1.0 linux/amd64").text
    default_tls = text.split("listen 443 ssl http2 default_server;", 1)[1].split("\n    }\n", 1)[0]
    assert "ssl_reject_handshake" not in default_tls
    assert "ssl_certificate /run/secrets/fb.crt;" in default_tls and "proxy_pass http://" in default_tls
    nginx_check(text)
    # Without a certificate of its own, the default backend still answers HTTP only.
    plain = service("fallback", {"com.docker.lb.port": "8080", "com.docker.lb.default_backend": "true"})
    observed = ObservedState.from_api(services=[plain], tasks=[task(plain, "wrk-0", ports={8080: 30090})],
                                      nodes=[node("wrk-0", "198.18.0.16")])
    text = render_nginx(HOST, build_route_table(observed, HOST), server_info="swarmgate/0.1.0 linux/amd64").text
    default_tls = text.split("listen 443 ssl http2 default_server;", 1)[1].split("\n    }\n", 1)[0]
    assert "ssl_reject_handshake on;" in default_tls
