"""The TLS port beyond terminated hosts: SSL passthrough's `stream` side, where terminated TLS listens
then, and the default backend over HTTPS (pure).

With no passthrough host, the http servers listen on the TLS port themselves, as before. With one,
the TLS port belongs to a `stream` server that reads the SNI (`ssl_preread`) and never decrypts:

* passthrough hosts go, through a second stream server that takes the PROXY header off again, to
  their tasks untouched: the backend presents its own certificate;
* every other name (terminated hosts, unknown names) goes to the http servers, which now listen on
  a local socket with the PROXY protocol, so they still see the client's address (`realip`).

A single stream server cannot do both: `proxy_protocol` is per server, and a passthrough backend
must not receive the header. Both sockets live in the proxy container's own /var/run.

nginx needs its stream module for this: Debian's nginx loads it from `modules-enabled` (package
libnginx-mod-stream), and nginx.org's images have it built in, where that folder does not exist and
the `include` of its glob reads nothing.
"""

from __future__ import annotations

from swarmgate.models.routing.nginx_sizes import server_names_hash_sizes
from swarmgate.models.routing.route_types import RouteTable, TLSFiles
from swarmgate.models.settings.extension import Extension

TERMINATE_SOCKET = "/var/run/swarmgate-tls-terminate.sock"
PASSTHROUGH_SOCKET = "/var/run/swarmgate-tls-passthrough.sock"
MODULES = "/etc/nginx/modules-enabled/*.conf"


def uses_stream(ext: Extension, table: RouteTable) -> bool:
    return bool(table.passthrough) and bool(ext.target_ssl_port)


def default_tls(table: RouteTable) -> TLSFiles | None:
    """The certificate unknown names get over HTTPS: the default backend's, from a TLS host of its own.

    Interlock's default backend also answered HTTPS for names nobody claims; a handshake needs a
    certificate, and the one the default backend's service already serves is the only one it owns.
    Without one, unknown names are refused in the handshake (`ssl_reject_handshake`).
    """
    if table.default_backend is None or not table.default_backend.upstreams:
        return None
    services = set(table.default_backend.services)
    for host in table.hosts:
        if host.tls and host.tls.cert and host.tls.key and any(services & set(p.services) for p in host.paths):
            return host.tls
    return None


def passthrough_context(ext: Extension, table: RouteTable) -> dict[str, object]:
    """What the template needs: the http servers' TLS `listen` parameters, and the stream side."""
    stream = uses_stream(ext, table)
    bucket, max_size = server_names_hash_sizes([p.host for p in table.passthrough], 64)
    return {
        "default_tls": default_tls(table),
        "tls_listen": f"unix:{TERMINATE_SOCKET} ssl proxy_protocol" if stream else f"{ext.target_ssl_port} ssl",
        "passthrough": {
            "enabled": stream,
            "modules": MODULES,
            "terminate_socket": TERMINATE_SOCKET,
            "passthrough_socket": PASSTHROUGH_SOCKET,
            "map_hash_bucket_size": bucket,
            "map_hash_max_size": max_size,
            # A host named like a `map` keyword is written with a backslash (nginx's escape for them).
            "map_keywords": frozenset({"default", "hostnames", "include", "volatile"}),
        },
    }
