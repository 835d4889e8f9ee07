"""Bad configs for the fault runs, made from the seed's TOML, with what the operator must do.

For the fault harness (tests/lab/faults.py, bench) and tests/lab/test_bad_config.py: each function
takes the seed's TOML text (lab/seed-config.toml) and returns it with one bad setting.
"""

from __future__ import annotations

import re

# Passes the model (one complete directive), refused by nginx: gzip_comp_level takes 1-9.
NGINX_REJECTS = '    HTTPOptions = ["gzip_comp_level 99"]\n'


def _config_option(text: str, line: str) -> str:
    out, found = re.subn(r"^(\s*\[Extensions\.default\.Config\]\s*\n)", lambda m: m.group(1) + line, text,
                         count=1, flags=re.M)
    assert found, "the seed's TOML has an [Extensions.default.Config] table"
    return out


def nginx_rejected_config(seed_toml: str) -> str:
    """The seed's TOML with an option that `swarmgate run` loads but `nginx -t` rejects.

    Expected: the operator runs, writes nothing to the Swarm, publishes nothing to the proxies (they
    keep the last good config), logs `proxy update held` once, /readyz lists `held: default
    (nginx_rejected): ...`, `swarmgate_proxy_update_held{extension="default",reason="nginx_rejected"}` is 1;
    `swarmgate check-config` refuses the file (exit 2, one line)."""
    return _config_option(seed_toml, NGINX_REJECTS)


def model_rejected_config(seed_toml: str) -> str:
    """The seed's TOML with the issue's `MaxConnections = 99999999999999999999`.

    Expected: `swarmgate run` and `check-config` exit 2 with one line before touching the Swarm, so an
    operator service updated to it never gets a running task; the proxies keep serving."""
    out, found = re.subn(r"^(\s*)MaxConnections = \d+$", r"\1MaxConnections = 99999999999999999999", seed_toml,
                         count=1, flags=re.M)
    return out if found else _config_option(seed_toml, "    MaxConnections = 99999999999999999999\n")
