"""Names and labels that mark the Swarm objects swarmgate owns (pure).

The operator writes only objects that carry `OWNER_LABEL`; everything else in the Swarm is read-only
to it. Config objects are content-addressed (their name ends with a digest prefix), so equal names
mean equal content and a crash between creating a config and using it is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

OWNER_LABEL: Final = "swarmgate.managed-by"
OWNER: Final = "swarmgate"
EXTENSION_LABEL: Final = "swarmgate.extension"
KIND_LABEL: Final = "swarmgate.kind"
DIGEST_LABEL: Final = "swarmgate.digest"
# The constraints the operator itself put on a proxy service. Everything else found there was added
# by a person (the seed's `--constraint-add`), and is kept rather than fought.
OWN_CONSTRAINTS_LABEL: Final = "swarmgate.constraints"
# The delivery channel's key (operator/delivery/channel_key.py) is one secret, which only the
# operator's and the proxies' services mount. Its label names the key's certificate by digest: a
# public fact (the certificate is what every proxy shows), never a credential, which tells an operator
# whether the key it holds is the one the proxies trust.
CHANNEL_FINGERPRINT_LABEL: Final = "swarmgate.channel.certificate-sha256"

CHANNEL_SECRET_NAME: Final = "swarmgate-channel"
# A rotated generation N of the channel key is the secret `swarmgate-channel-N`, labelled with N.
CHANNEL_GENERATION_LABEL: Final = "swarmgate.channel.generation"

# Kinds of owned config objects.
KIND_AGENT: Final = "agent"
KIND_BOOTSTRAP: Final = "bootstrap"
KIND_PROXY_CONFIG: Final = "proxy-config"
KIND_CHANNEL: Final = "channel-key"
KIND_PROXY: Final = "proxy"
# The certificate courier (operator/planning/courier.py): copies TLS secrets onto the LB nodes.
KIND_COURIER: Final = "courier"

DIGEST_CHARS_IN_NAME: Final = 12


def owned_labels(*, kind: str, extension: str | None = None, digest: str | None = None) -> dict[str, str]:
    """Labels for an object the operator creates."""
    labels = {OWNER_LABEL: OWNER, KIND_LABEL: kind}
    if extension is not None:
        labels[EXTENSION_LABEL] = extension
    if digest is not None:
        labels[DIGEST_LABEL] = digest
    return labels


def is_owned(labels: Mapping[str, str] | None) -> bool:
    return labels is not None and labels.get(OWNER_LABEL) == OWNER


def config_object_name(proxy_service: str, kind: str, digest: str) -> str:
    """Content-addressed name of an owned Swarm config: `<proxy>.<kind>.<digest prefix>`."""
    return f"{proxy_service}.{kind}.{digest[:DIGEST_CHARS_IN_NAME]}"
