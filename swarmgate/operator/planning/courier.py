"""The certificate courier: the service that brings TLS secrets to the proxies without touching their spec (pure).

Swarm gives a secret's data only to a container whose service mounts it, and a change to a service's
secrets replaces its tasks. With the secrets in the proxy's spec, every TLS host added, rotated or
removed rolled every proxy task. So in hitless mode the proxy mounts no TLS secret: a small global
service per extension, `<ProxyServiceName>-certs`, on exactly the proxy's nodes, mounts them
instead, each at `/run/secrets/<secret ID>`, and copies each into a node-local named volume
(`<ProxyServiceName>-certs`) as `<ID>.pem` (0600, root; written aside and renamed). The proxy mounts
that volume read-only at `CERTS_DIR`, and the rendered config names `CERTS_DIR/<ID>.pem`: a
secret's content never changes under its ID, so a path names one content for good. Only the courier's
tasks are replaced when the set of secrets changes, and they serve no traffic.

Which IDs the courier mounts (`courier_secret_ids`): every ID the route table needs, plus those it
mounts now, until every proxy task serves the current config. A proxy task that restarts serves its
node's saved config, which may still name an old ID; dropping that ID only once no proxy serves a
config naming it keeps its file there.

The agent (`agent.sh`) waits, before `nginx -t`, until the files a pushed config names exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from swarmgate.models.routing.tls_secrets import CERTS_DIR, SECRETS_DIR
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.objects import SwarmSecret
from swarmgate.models.swarm.ownership import KIND_COURIER, owned_labels
from swarmgate.models.swarm.services import Service
from swarmgate.operator.planning.service_spec import Mount, SecretReference, ServiceSpec, UpdateConfig

NANOS = 1_000_000_000
# Where the courier's container sees the volume (the proxy sees it at CERTS_DIR, read-only).
COURIER_DIR = "/certs"

# The courier's whole program. The copy is atomic per file (a reader sees the old file or the new,
# never half), files of IDs no longer mounted go, then it sleeps until told to stop: TERM ends the
# wait at once, so an update of the courier takes a moment. A file is root's alone (0600) unless its
# mount is readable by all (`readable_ids`: htpasswd files, which nginx's workers read per request).
COURIER_SCRIPT = f"""set -u
umask 077
dst={COURIER_DIR}
keep=" "
n=0
for src in {SECRETS_DIR}*; do
  [ -f "$src" ] || continue
  id=${{src##*/}}
  mode=600
  [ -n "$(find "$src" -perm -004)" ] && mode=644
  cat "$src" >"$dst/.$id.tmp" && chmod $mode "$dst/.$id.tmp" && mv "$dst/.$id.tmp" "$dst/$id.pem" || exit 1
  keep="$keep$id "
  n=$((n + 1))
done
for f in "$dst"/*.pem "$dst"/.*.tmp; do
  [ -e "$f" ] || continue
  id=${{f##*/}}
  id=${{id%.pem}}
  case $keep in *" $id "*) ;; *) rm -f "$f" ;; esac
done
echo "swarmgate-certs: $n certificate files in place"
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


def courier_name(ext: Extension) -> str:
    return f"{ext.proxy_service_name}-certs"


def certs_volume(ext: Extension) -> str:
    """The node-local named volume the courier writes and the proxy reads (one per node)."""
    return f"{ext.proxy_service_name}-certs"


def proxy_certs_mount(ext: Extension) -> Mount:
    return {"Type": "volume", "Source": certs_volume(ext), "Target": CERTS_DIR, "ReadOnly": True}


def mounted_ids(courier: Service | None) -> frozenset[str]:
    """The secret IDs the courier's spec mounts now (Swarm stores each reference's ID)."""
    if courier is None:
        return frozenset()
    refs = ((courier.spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Secrets") or []
    return frozenset(ref["SecretID"] for ref in refs
                     if isinstance(ref, Mapping) and isinstance(ref.get("SecretID"), str) and ref["SecretID"])


def courier_secret_ids(needed: Iterable[str], mounted: Iterable[str], *, all_current: bool,
                       existing: Iterable[str]) -> tuple[str, ...]:
    """The IDs the courier must mount: the needed ones, and, until every proxy task serves the current
    config, the ones it mounts now (an older config, saved on a node, may name them). A secret that
    no longer exists cannot be mounted (Swarm refuses the spec), so it goes in any case."""
    keep = set(needed) if all_current else set(needed) | set(mounted)
    return tuple(sorted(keep & set(existing)))


def build_courier_spec(ext: Extension, secrets: Iterable[SwarmSecret], *, constraints: list[str],
                       readable_ids: Iterable[str] = ()) -> ServiceSpec:
    """The courier's `ServiceSpec`: global on the proxy's placement (`constraints`, as the proxy's
    spec has them), the proxy's image (it has `sh`), each secret mounted under its ID; those of
    `readable_ids` readable by all, which the courier keeps in its copy (see COURIER_SCRIPT)."""
    readable = set(readable_ids)
    refs: list[SecretReference] = [
        {"File": {"Name": f"{SECRETS_DIR}{s.id}", "UID": "0", "GID": "0", "Mode": 0o444 if s.id in readable else 0o400},
         "SecretName": s.name}
        for s in sorted(secrets, key=lambda s: s.id)
    ]
    # Stop-first, all at once: a courier serves no traffic, and two courier tasks on one node would
    # only copy the same files. Swarm's start-first is not offered for global services everywhere.
    update: UpdateConfig = {"Parallelism": 0, "FailureAction": "continue", "Monitor": NANOS, "Order": "stop-first"}
    return {
        "Name": courier_name(ext),
        "Labels": dict(sorted(owned_labels(kind=KIND_COURIER, extension=ext.name).items())),
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": ext.proxy_image,
                "Command": ["/bin/sh", "-c", COURIER_SCRIPT],
                "Env": [],
                "Labels": {},
                "StopSignal": "SIGTERM",
                "StopGracePeriod": 5 * NANOS,
                "Configs": [],
                "Secrets": refs,
                "Mounts": [{"Type": "volume", "Source": certs_volume(ext), "Target": COURIER_DIR}],
            },
            "Placement": {"Constraints": list(constraints), "Preferences": []},
        },
        "Mode": {"Global": {}},
        "UpdateConfig": update,
        "RollbackConfig": update,
        "EndpointSpec": {"Ports": []},
    }
