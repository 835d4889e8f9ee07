"""How an extension's configs reach its proxies: pushed in place (hitless) or rolled out as new Swarm
configs (plain), and what the configuration asks for that delivery does differently (pure)."""

from __future__ import annotations

from swarmgate.models.settings.config import Config
from swarmgate.models.settings.extension import Extension


def delivers_in_place(ext: Extension) -> bool:
    """Hitless delivery, which needs host-mode publishing: the operator pushes each config to each
    proxy task through the task's own node and host port. Through the ingress routing mesh a request
    lands on any task, so one task cannot be addressed; such an extension is delivered the plain way
    (a new Swarm config and a rolling update per change) until ingress gets a channel of its own."""
    return ext.hitless_service_update and ext.publish_mode == "host"


def delivery_notices(config: Config) -> tuple[str, ...]:
    """What the configuration asks for that delivery does differently, said once per start."""
    notices: list[str] = []
    if config.endpoint_override:
        notices.append("EndpointOverride is accepted and not needed: the operator pushes configs to its "
                       "proxies, which never contact it")
    for name, ext in sorted(config.extensions.items()):
        if delivers_in_place(ext) and ext.proxy_args:
            notices.append(f"Extensions.{name}: ProxyArgs are not applied with HitlessServiceUpdate = true: the "
                           "agent starts nginx itself (nginx -c ProxyConfigPath -g 'daemon off;'); put nginx "
                           "directives in Config.GlobalOptions instead, or set HitlessServiceUpdate = false")
        if ext.hitless_service_update and not delivers_in_place(ext):
            notices.append(f"Extensions.{name}: PublishMode = \"ingress\" cannot address one proxy task, so "
                           "HitlessServiceUpdate is not applied: every change is a new Swarm config and a "
                           "rolling update of the proxy (use PublishMode = \"host\" for in-place reloads)")
    return tuple(notices)
