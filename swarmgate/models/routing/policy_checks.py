"""What a service's policy labels name outside its labels: may the proxy use it (pure).

* `swarmgate.auth_secret` names a Swarm secret holding an htpasswd file. It reaches nginx the way
  certificates do (`tls_secrets`: Swarm's mount with plain delivery, the certificate courier's copy
  with hitless delivery), never inside a config, and is held to the same rules: a secret that does
  not exist (`missing_secret`), that swarmgate owns (`forbidden_secret`), or that a courier did not
  bring in time (`undelivered_secret`) sets only that service aside. nginx reads the file at each
  request, not at `nginx -t`: a file that is not an htpasswd file refuses every password (401).
* `swarmgate.error_page_50x` names a Swarm config holding the page's HTML. Swarm configs are not
  secret to the API's readers, but they are not meant for the internet either: a config is used
  only when it carries the label `swarmgate.error-page=true`, so one service's labels cannot
  publish another application's config as its error page. Its text is written into the rendered
  config, escaped (`policy_values.nginx_quoted`), and bounded so nginx reads it in one buffer.
* `swarmgate.response_header.<Name>` may not name a header `HTTPOptions` adds to every response
  (a second `X-Frame-Options` or `Content-Security-Policy` would weaken the operator's own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Set
from dataclasses import replace

from swarmgate.models.routing.labels import OWN_PREFIX, ReasonKind, ServiceRouting
from swarmgate.models.routing.policy_values import page_problem
from swarmgate.models.routing.tls_secrets import named_secret_problem
from swarmgate.models.swarm.objects import SwarmConfig, SwarmSecret

ERROR_PAGE_LABEL = "swarmgate.error-page"


def policy_problem(
    routing: ServiceRouting, *, secrets: Mapping[str, SwarmSecret], configs: Mapping[str, SwarmConfig],
    global_headers: Set[str], unusable: Set[str] = frozenset(), undelivered: Set[str] = frozenset(),
) -> tuple[ReasonKind, str] | ServiceRouting:
    """(kind, reason) when the service's policy may not reach the proxy, else its routing with each
    error page's text filled in. `global_headers`: the lower-cased names HTTPOptions adds."""
    policy = routing.policies.route
    if policy.auth_secret is not None:
        problem = named_secret_problem(
            f"label {OWN_PREFIX}auth_secret", policy.auth_secret, secrets, unusable, undelivered,
            what="an htpasswd file", fix="an htpasswd file (htpasswd -B, or openssl passwd)")
        if problem is not None:
            return problem
    for name, _ in policy.headers:
        if name.lower() in global_headers:
            return "response_header", (f"label {OWN_PREFIX}response_header.{name}: HTTPOptions already adds "
                                       f"{name} to every response; a second one would weaken it")
    pages = []
    for page in policy.error_pages:
        label = f"label {OWN_PREFIX}error_page_{page.code}"
        kind: ReasonKind = "error_page_502" if page.code == 502 else "error_page_503" if page.code == 503 \
            else "error_page_504"
        config = configs.get(page.config)
        if config is None:
            return kind, f"{label}: no Swarm config named {page.config!r}"
        if config.labels.get(ERROR_PAGE_LABEL) != "true":
            return kind, (f"{label}: Swarm config {page.config!r} lacks the label {ERROR_PAGE_LABEL}=true, "
                          "which says it may be shown to anyone")
        why = page_problem(config.data)
        if why is not None:
            return kind, f"{label}: Swarm config {page.config!r} {why}"
        body = config.data.decode("utf-8")
        pages.append(replace(page, body=body, digest=hashlib.sha256(config.data).hexdigest()[:16]))
    if not pages:
        return routing
    route = replace(policy, error_pages=tuple(pages))
    return replace(routing, policies=replace(routing.policies, route=route))
