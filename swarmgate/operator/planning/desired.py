"""Desired state: what every extension's proxy must be, given the config and a snapshot (pure).

`build_desired` is the pipeline: the one function that joins the pieces — route table (labels →
routes), rendered nginx config, the Swarm config objects the proxy mounts, the proxy's ServiceSpec,
and what nobody routes. A live pass and the offline commands (`plan`, `render`, `routes`) all call it,
so they compute the same thing by construction. It reads no clock and calls no Docker.

One extension's failure (a broken custom template, a value the renderer refuses) becomes that
extension's `problem`; it never fails the pass for the other extensions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from swarmgate.errors import SwarmgateError
from swarmgate.models.routing.acme_hosts import NO_ACME, AcmeRouting
from swarmgate.models.routing.labels import SetAside
from swarmgate.models.routing.routes import RouteTable, build_route_table, unclaimed_services
from swarmgate.models.routing.tls_secrets import tls_file
from swarmgate.models.settings.config import Config
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import (
    CHANNEL_SECRET_NAME,
    KIND_AGENT,
    KIND_BOOTSTRAP,
    KIND_PROXY_CONFIG,
    OWN_CONSTRAINTS_LABEL,
    config_object_name,
    is_owned,
    owned_labels,
)
from swarmgate.models.swarm.services import Service
from swarmgate.operator.planning.courier import (
    build_courier_spec,
    courier_name,
    courier_secret_ids,
    mounted_ids,
)
from swarmgate.operator.planning.delivery_mode import delivers_in_place, delivery_notices
from swarmgate.operator.planning.proxyspec import build_proxy_spec, proxy_constraints, proxy_networks
from swarmgate.operator.planning.runtime import Runtime, current_runtime
from swarmgate.operator.planning.service_spec import ServiceSpec
from swarmgate.renderers.nginx import RenderedConfig, custom_template, render_bootstrap, render_nginx


@dataclass(frozen=True)
class ConfigObject:
    """A Swarm config the operator owns; its name is derived from its content."""

    name: str
    data: bytes
    labels: dict[str, str]


@dataclass(frozen=True)
class ExtensionDesired:
    name: str
    route_table: RouteTable
    rendered: RenderedConfig
    hitless: bool
    configs: tuple[ConfigObject, ...]
    proxy_spec: ServiceSpec | None
    problem: str | None = None
    render_error: str | None = None  # why `rendered` is empty: the extension's template failed
    # The certificate courier's spec (hitless only): it brings the TLS secrets to the proxies' nodes.
    courier_spec: ServiceSpec | None = None


@dataclass(frozen=True)
class DesiredState:
    extensions: tuple[ExtensionDesired, ...]
    needs_channel: bool
    notices: tuple[str, ...] = field(default_factory=tuple)
    # Routed services that no extension serves (their service cluster has no extension).
    unclaimed: tuple[SetAside, ...] = field(default_factory=tuple)

    def extension(self, name: str) -> ExtensionDesired:
        return next(e for e in self.extensions if e.name == name)


def _config_object(ext: Extension, kind: str, data: bytes) -> ConfigObject:
    digest = hashlib.sha256(data).hexdigest()
    return ConfigObject(
        name=config_object_name(ext.proxy_service_name, kind, digest),
        data=data,
        labels=owned_labels(kind=kind, extension=ext.name, digest=digest),
    )


def user_constraints(service: Service | None) -> tuple[str, ...]:
    """Constraints on the proxy service that the operator did not put there (added by hand)."""
    if service is None:
        return ()
    ours = {c for c in service.labels.get(OWN_CONSTRAINTS_LABEL, "").split(",") if c}
    return tuple(sorted(c for c in service.constraints if c not in ours))


def control_peers(config: Config, observed: ObservedState) -> tuple[str, ...]:
    """Who may reach the proxies' control server once they run a pushed config: every node of the
    Swarm (an operator only runs on a manager, and a worker promoted later is already listed) plus
    `ControlSources`. A node that joins is listed by the next push, a second or so later. The
    bootstrap config lists nobody (it must not change with the nodes: it is part of the proxy spec),
    so a proxy task that starts from it accepts any holder of the channel key."""
    return tuple(sorted({n.addr for n in observed.nodes if n.addr} | set(config.control_sources)))


def _extension_desired(
    ext: Extension,
    observed: ObservedState,
    *,
    runtime: Runtime,
    unusable_secrets: Set[str],
    undelivered_secrets: Set[str],
    control_peers: tuple[str, ...],
    served: Mapping[str, str],
    acme: AcmeRouting,
    acme_thumbprint: str | None,
) -> ExtensionDesired:
    table = build_route_table(observed, ext, unusable_secrets=unusable_secrets,
                              undelivered_secrets=undelivered_secrets, acme=acme)
    current = observed.service_named(ext.proxy_service_name)
    problem = render_error = None
    hitless = delivers_in_place(ext)
    by_name = {s.name: s for s in observed.secrets}
    tls_paths = {name: tls_file(by_name[name], hitless=hitless) for name in table.secrets if name in by_name}
    try:
        rendered = render_nginx(ext, table, server_info=runtime.server_info, control_peers=control_peers,
                                template_text=custom_template(ext, observed), tls_paths=tls_paths,
                                acme_thumbprint=acme_thumbprint if acme.configured else None)
        bootstrap = render_bootstrap(ext, server_info=runtime.server_info)
    except SwarmgateError as exc:
        # A broken custom template stops this extension only; its proxies keep the last good config.
        rendered = bootstrap = RenderedConfig.of("")
        problem = render_error = str(exc)
    if current is not None and not is_owned(current.labels):
        problem = problem or (f"a service named {ext.proxy_service_name!r} exists and is not managed by swarmgate; "
                   "it is left alone and this extension's proxy is not managed")
    if hitless:
        configs: tuple[ConfigObject, ...] = (
            _config_object(ext, KIND_AGENT, runtime.agent_script),
            _config_object(ext, KIND_BOOTSTRAP, bootstrap.text.encode()),
        )
        names: dict[str, Any] = {"agent_config": configs[0].name, "bootstrap_config": configs[1].name,
                                 "proxy_config": None, "channel_secret": CHANNEL_SECRET_NAME}
    else:
        configs = (_config_object(ext, KIND_PROXY_CONFIG, rendered.text.encode()),)
        names = {"agent_config": None, "bootstrap_config": None, "proxy_config": configs[0].name,
                 "channel_secret": None}
    spec = courier = None
    if problem is None:
        spec = build_proxy_spec(
            ext,
            tls_secrets=table.secrets,
            readable_secrets=table.readable_only_secrets,
            networks=proxy_networks(table.networks, current.networks if current is not None else ()),
            user_constraints=user_constraints(current),
            **names,
        )
        running = observed.service_named(courier_name(ext))
        ids = courier_secret_ids(
            (by_name[n].id for n in table.secrets if n in by_name), mounted_ids(running),
            all_current=served.get(ext.name) == rendered.digest, existing=(s.id for s in observed.secrets))
        # The courier comes with the first TLS host and then stays (with no secret, it keeps no file).
        if hitless and (ids or running is not None):
            by_id = {s.id: s for s in observed.secrets}
            courier = build_courier_spec(ext, (by_id[i] for i in ids),
                                         constraints=proxy_constraints(ext, user_constraints(current)),
                                         readable_ids=(by_name[n].id for n in table.readable_only_secrets
                                                       if n in by_name))
        elif running is not None and is_owned(running.labels) and mounted_ids(running):
            # Plain delivery mounts the secrets into the proxy itself. The courier first mounts
            # nothing, so its tasks delete the key files they wrote; then it goes (`plan.py`).
            courier = build_courier_spec(ext, (), constraints=proxy_constraints(ext, user_constraints(current)))
    return ExtensionDesired(name=ext.name, route_table=table, rendered=rendered, hitless=hitless,
                            configs=configs, proxy_spec=spec, problem=problem, render_error=render_error,
                            courier_spec=courier)


def build_desired(
    config: Config,
    observed: ObservedState,
    *,
    runtime: Runtime,
    unusable_secrets: Set[str] = frozenset(),
    undelivered_secrets: Set[str] = frozenset(),
    served: Mapping[str, str] | None = None,
    acme: AcmeRouting = NO_ACME,
    acme_thumbprint: str | None = None,
) -> DesiredState:
    """`unusable_secrets`: IDs of secrets a proxy's nginx could not load (learnt from its rejections,
    see models/routing/tls_secrets.py); `undelivered_secrets`: IDs whose courier file a proxy waited
    for in vain; the services that name either are set aside. `served`: per extension, the digest
    every proxy task serves (the courier drops a secret only once they serve the current config).
    `acme`: the issued certificate per host (`acme_plan.acme_routing`); `acme_thumbprint`: the ACME
    account's, for the proxies' HTTP-01 answers (None: no challenge location is rendered)."""
    extensions = tuple(
        _extension_desired(ext, observed, runtime=runtime, unusable_secrets=unusable_secrets,
                           undelivered_secrets=undelivered_secrets,
                           control_peers=control_peers(config, observed), served=served or {}, acme=acme,
                           acme_thumbprint=acme_thumbprint)
        for _, ext in sorted(config.extensions.items())
    )
    return DesiredState(
        extensions=extensions,
        needs_channel=any(e.hitless and e.problem is None for e in extensions),
        notices=(*config.notices, *delivery_notices(config)),
        unclaimed=unclaimed_services(observed, (ext.service_cluster for ext in config.extensions.values())),
    )


def compute_desired(config: Config, observed: ObservedState, *, unusable_secrets: Set[str] = frozenset(),
                    undelivered_secrets: Set[str] = frozenset(),
                    served: Mapping[str, str] | None = None, acme: AcmeRouting = NO_ACME,
                    acme_thumbprint: str | None = None) -> DesiredState:
    """The pipeline with this program's runtime: what live passes and the offline commands compute."""
    return build_desired(config, observed, runtime=current_runtime(), unusable_secrets=unusable_secrets,
                         undelivered_secrets=undelivered_secrets, served=served, acme=acme,
                         acme_thumbprint=acme_thumbprint)
