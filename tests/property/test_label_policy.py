"""One service's labels against the agent's content policy: whatever they render is admitted whole, so
no label can make a proxy refuse everyone's routes (the policy reads nginx's syntax: a map key is not a
directive, a quoted value is not a path). The renderer's typing is the first line; the agent is the last,
and must not be a way to deny service either. Runs the real agent.sh in its SWARMGATE_POLICY_CHECK mode.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from swarmgate.operator.planning.runtime import AGENT_SCRIPT
from tests.property.test_label_injection import check, lb_labels

BUSYBOX = Path("/bin/busybox")
RENDERED_DIR = "/var/lib/swarmgate"

pytestmark = pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox (the proxy image's shell)")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lb_labels())
def test_arbitrary_labels_never_yield_a_config_the_agent_refuses(labels: dict[str, str]) -> None:
    text = check(labels)
    with tempfile.TemporaryDirectory() as tmp:
        agent_dir = Path(tmp) / "swarmgate"
        config = Path(tmp) / "nginx.conf"
        config.write_text(text.replace(RENDERED_DIR, str(agent_dir)))
        env = {"PATH": os.environ["PATH"], "SWARMGATE_TASK_ID": "t1", "SWARMGATE_DIR": str(agent_dir),
               "SWARMGATE_POLICY_CHECK": str(config)}
        done = subprocess.run([str(BUSYBOX), "sh", str(AGENT_SCRIPT)], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr
