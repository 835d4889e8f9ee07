"""One `[Extensions.NAME]` table of the configuration: a proxy service and the service cluster it
routes, with Interlock's TOML keys as aliases (pure)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

from swarmgate.models.settings.duration import duration_in
from swarmgate.models.settings.nginx_options import NginxOptions
from swarmgate.models.settings.numbers import Port, int_in
from swarmgate.models.settings.text_rules import (
    absolute_path,
    cluster_name,
    image_reference,
    placement_constraint,
    placement_preference,
    stop_signal,
    swarm_service_name,
)

LOADBALANCER_CONSTRAINT = "node.labels.nodetype==loadbalancer"

StrMap = dict[StrictStr, StrictStr]
StrList = tuple[StrictStr, ...]
Constraints = tuple[Annotated[StrictStr, AfterValidator(placement_constraint)], ...]
Preferences = tuple[Annotated[StrictStr, AfterValidator(placement_preference)], ...]
# Longest a proxy waits to stop, and between two tasks of a roll: beyond an hour is a typo.
ProxyDuration = Annotated[float, duration_in(0.0, 3600.0)]


class Extension(BaseModel):
    """One `[Extensions.NAME]` table: one proxy service and the service cluster it routes."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    name: StrictStr = "default"
    # Interlock's extension service: accepted, not needed (see `Config.notices`).
    image: StrictStr | None = Field(None, alias="Image")
    args: StrList = Field((), alias="Args")
    service_name: StrictStr | None = Field(None, alias="ServiceName")
    labels: StrMap = Field(default_factory=dict, alias="Labels")
    container_labels: StrMap = Field(default_factory=dict, alias="ContainerLabels")
    constraints: StrList = Field((), alias="Constraints")
    placement_preferences: StrList = Field((), alias="PlacementPreferences")
    config_image: StrictStr | None = Field(None, alias="ConfigImage")
    config_service_name: StrictStr | None = Field(None, alias="ConfigServiceName")
    # swarmgate uses no overlay networks: upstreams are node address and host port.
    networks: StrList = Field((), alias="Networks")
    # The proxy service.
    proxy_image: Annotated[StrictStr, AfterValidator(image_reference)] = Field("nginx:alpine", alias="ProxyImage")
    proxy_args: StrList = Field((), alias="ProxyArgs")
    proxy_service_name: Annotated[StrictStr, AfterValidator(swarm_service_name)] = Field("interlock-proxy",
                                                                                 alias="ProxyServiceName")
    proxy_config_path: Annotated[StrictStr, AfterValidator(absolute_path)] = Field("/etc/nginx/nginx.conf",
                                                                                  alias="ProxyConfigPath")
    proxy_labels: StrMap = Field(default_factory=dict, alias="ProxyLabels")
    proxy_container_labels: StrMap = Field(default_factory=dict, alias="ProxyContainerLabels")
    proxy_replicas: Annotated[int, int_in(0, 1024)] = Field(2, alias="ProxyReplicas")
    proxy_stop_signal: Annotated[StrictStr, AfterValidator(stop_signal)] = Field("SIGQUIT", alias="ProxyStopSignal")
    proxy_stop_grace_period: ProxyDuration = Field(5.0, alias="ProxyStopGracePeriod")
    proxy_constraints: Constraints = Field((), alias="ProxyConstraints")
    proxy_placement_preferences: Preferences = Field((), alias="ProxyPlacementPreferences")
    proxy_update_delay: ProxyDuration = Field(0.0, alias="ProxyUpdateDelay")
    service_cluster: Annotated[StrictStr, AfterValidator(cluster_name)] = Field("", alias="ServiceCluster")
    publish_mode: Literal["ingress", "host"] = Field("ingress", alias="PublishMode")
    published_port: Port = Field(80, alias="PublishedPort")
    target_port: Port = Field(80, alias="TargetPort")
    published_ssl_port: Port = Field(443, alias="PublishedSSLPort")
    target_ssl_port: Port = Field(443, alias="TargetSSLPort")
    template: StrictStr | None = Field(None, alias="Template")
    config: NginxOptions = Field(default_factory=NginxOptions, alias="Config")
    hitless_service_update: StrictBool = Field(True, alias="HitlessServiceUpdate")
    # swarmgate's own key: HTTP/2 to clients on every TLS listener (ALPN; plain HTTP stays HTTP/1.1).
    http2: StrictBool = Field(True, alias="HTTP2")

    @model_validator(mode="before")
    @classmethod
    def _host_mode_pins_to_load_balancers(cls, data: Any) -> Any:
        # In host mode the proxy binds 80/443 on the node itself, so it belongs on the nodes the seed
        # labels `nodetype=loadbalancer`; an explicit ProxyConstraints (even []) wins.
        if not isinstance(data, dict):
            return data
        mode = data.get("PublishMode", data.get("publish_mode"))
        if mode == "host" and "ProxyConstraints" not in data and "proxy_constraints" not in data:
            return {**data, "ProxyConstraints": (LOADBALANCER_CONSTRAINT,)}
        return data

    @model_validator(mode="after")
    def _distinct_ports(self) -> Extension:
        if self.target_port == self.target_ssl_port:
            raise ValueError(f"TargetPort and TargetSSLPort must differ, both are {self.target_port}")
        if self.published_port == self.published_ssl_port:
            raise ValueError(
                f"PublishedPort and PublishedSSLPort must differ, both are {self.published_port}"
            )
        return self

