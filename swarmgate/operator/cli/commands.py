"""The commands that talk to a live Swarm: run, plan, status, snapshot, rotate-key (I/O, through
observe/actions; `run` hands everything to `control/operator.py`).

`plan` and `status` decide with `planning/decide.py`'s `decide_pass`, the function a live pass
calls. Every command loads and validates the configuration before it connects to anything, so a bad file
changes nothing in the Swarm.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from swarmgate.errors import SwarmgateError
from swarmgate.models.settings.config import Config, load_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import (
    CHANNEL_GENERATION_LABEL,
    CHANNEL_SECRET_NAME,
    KIND_CHANNEL,
    owned_labels,
)
from swarmgate.models.swarm.state_file import load_state_file
from swarmgate.operator.control.gc_pause import collection_paused
from swarmgate.operator.control.operator import Operator
from swarmgate.operator.delivery.channel_holder import (
    ChannelKeyHolder,
    Keyring,
    channel_generation,
    channel_secret_name,
)
from swarmgate.operator.delivery.status import rejections, status_document
from swarmgate.operator.delivery.survey import served_everywhere, survey
from swarmgate.operator.edge.actions import apply
from swarmgate.operator.edge.observe import connect, fetch_documents, observe
from swarmgate.operator.planning import acme_account
from swarmgate.operator.planning.actions import CreateChannelSecret, NoOp, PublishProxyConfig
from swarmgate.operator.planning.decide import Reported, decide_pass
from swarmgate.operator.planning.findings import findings_text, route_findings
from swarmgate.operator.planning.leadership import leader_summary
from swarmgate.operator.planning.route_rows import route_rows
from swarmgate.operator.telemetry.calls import CallCounter
from swarmgate.renderers.validate import NginxGate

log = logging.getLogger("swarmgate")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    for notice in config.notices:
        log.info(notice)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    operator = Operator.build(_load(args), Path(args.channel_key))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        operator.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    operator.run()
    log.info("stopped")
    return 0


def _observed(config: Config, state: str | None) -> ObservedState:
    if state:
        return load_state_file(state)
    return observe(connect(config))


def cmd_plan(args: argparse.Namespace) -> int:
    config = _load(args)
    with collection_paused():
        observed = _observed(config, args.state)
    reported = Reported()
    ring = None if args.state else _keyring(args, observed)
    acme = _acme_inputs(config, ring)
    if not args.state:
        # What every proxy task serves, asked of the proxies themselves (no operator needed); the
        # secrets their rejections blame are set aside as a live pass would.
        with collection_paused():
            wanted = decide_pass(config, observed, **acme).desired  # what the proxies are asked to be current with
        surveyed = survey(config, observed, wanted, ring)
        served = served_everywhere(surveyed)
        reported = Reported(published=served, rejections=rejections(surveyed), served=served)
    # What a live pass would do, holds included: the same nginx -t before anything is published.
    with collection_paused():
        decision = decide_pass(config, observed, reported=reported, verdict=NginxGate().verdict, **acme)
    actions = decision.actions
    if args.state:
        # A state file has no proxies to ask what they serve: show Docker changes only.
        actions = [a for a in actions if not isinstance(a, PublishProxyConfig)] or [NoOp()]
    for ext in decision.desired.extensions:
        print(f"extension {ext.name}: {len(ext.route_table.hosts)} host(s), config {ext.rendered.digest[:12]}")
        if ext.problem:
            print(f"  not managed: {ext.problem}")
        for aside in ext.route_table.set_aside:
            print(f"  set aside: {aside.service}: {aside.reason}")
    for action in actions:
        print(action.describe())
    return 0 if all(isinstance(a, NoOp) for a in actions) else 1


def _acme_inputs(config: Config, ring: Keyring | None) -> dict[str, Any]:
    """What a live pass gives `decide_pass` about ACME: the time, and the account's thumbprint when
    the channel key is at hand (without it, the config is rendered without the challenge location)."""
    boot = ring.bootstrap if ring is not None else None
    thumb = None
    if boot is not None and config.acme_directory is not None:
        thumb = acme_account.thumbprint(acme_account.account_key(boot.hmac_key, config.acme_directory))
    return {"now": datetime.datetime.now(datetime.UTC), "acme_thumbprint": thumb}


def _keyring(args: argparse.Namespace, observed: ObservedState) -> Keyring | None:
    """The keys that let a command read the proxies' status; without them they cannot be asked."""
    holder = ChannelKeyHolder(Path(args.channel_key), writable=False)
    holder.sync(observed)
    ring = holder.keyring()
    if ring is None:
        print(f"note: no channel key at {args.channel_key}: the proxies cannot be asked what they serve "
              "(run this inside an operator's container, or pass --channel-key, or use status --endpoint)",
              file=sys.stderr)
    return ring


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            data: dict[str, Any] = json.load(response)
            return data
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SwarmgateError(f"cannot read {url}: {exc}") from exc


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.endpoint:
        status = _get_json(f"{args.endpoint.rstrip('/')}/v1/status")
        # An operator's /v1/status carries its election and readiness under "operator"; one from before
        # the status page has only /v1/leader, and one from before leader election neither.
        if "operator" not in status:
            with contextlib.suppress(SwarmgateError):
                status["operator"] = _get_json(f"{args.endpoint.rstrip('/')}/v1/leader")
    else:
        # Straight from the proxies: what each running proxy task says it serves, against the
        # config this pipeline computes (the operator's, by construction).
        with collection_paused():
            observed = observe(connect(config))
        ring = _keyring(args, observed)
        with collection_paused():
            desired = decide_pass(config, observed, **_acme_inputs(config, ring)).desired
        status = {**status_document(survey(config, observed, desired, ring)),
                  **route_findings(desired, observed), "routes": route_rows(desired)}
        status["leader"] = leader_summary(observed)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    print(status_text(status))
    all_current = all(c.get("all_current") for c in status.get("clusters", {}).values())
    return 0 if all_current else 1


def status_text(status: dict[str, Any]) -> str:
    """Per extension its current config, then per proxy task: node, served config, current or not."""
    lines = []
    if "leader" in status:
        lines.append(f"leader: {status['leader']['detail']}")
    if "operator" in status:
        op = status["operator"]
        lines.append(f"this operator: {op.get('role')} ({op.get('identity')}; holder {op.get('holder') or '-'}: "
                     f"{op.get('reason')})")
    # The document's "clusters" are extensions (one proxy service each), not ServiceCluster values.
    for name, extension in sorted(status.get("clusters", {}).items()):
        digest = (extension.get("digest") or "-")[:12]
        state = "all proxies current" if extension.get("all_current") else "NOT all proxies current"
        lines.append(f"extension {name}: config {digest} ({state})")
        lines.append(f"  {'TASK':26} {'NODE':12} {'SERVES':12} {'CURRENT':8} LAST ERROR")
        for proxy in extension.get("proxies", []):
            served = (proxy.get("served_digest") or "bootstrap")[:12]
            error = (proxy.get("last_error") or "").splitlines()[:1]
            if proxy.get("waiting_digest"):  # a push held for the certificate courier's files: not an error
                error = [f"{proxy['waiting_digest'][:12]} {proxy.get('waiting_for') or 'waiting'}"]
            lines.append(f"  {proxy['task']:26} {proxy.get('hostname') or proxy['node']:12} {served:12} "
                         f"{'yes' if proxy.get('current') else 'no':8} {error[0] if error else ''}".rstrip())
    lines.extend(findings_text(status))
    return "\n".join(lines) if lines else "no extension has published a config yet"


def cmd_snapshot(args: argparse.Namespace) -> int:
    config = _load(args)
    documents = fetch_documents(connect(config))
    text = json.dumps(documents, indent=1, sort_keys=True, default=str)
    if args.output == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(args.output).write_text(text + "\n")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """A new generation of the channel key, as the secret `swarmgate-channel-N`. The operators mount
    it (one restart each) and the leader hands it to every proxy task over the channel, signed with
    the key each task holds: no proxy task is replaced. Generation 0 stays: new proxy tasks start
    with it and are handed the newest key at once."""
    config = _load(args)
    api = connect(config)
    observed = observe(api)
    generations = [g for g in (channel_generation(s.name) for s in observed.secrets) if g is not None]
    if 0 not in generations:
        raise SwarmgateError(f"no {CHANNEL_SECRET_NAME} secret yet: an operator creates it on its first pass")
    generation = max(generations) + 1
    path = Path(args.channel_key)
    # A plain-process operator keeps its keys in files beside --channel-key; a mounted secret's
    # directory is read-only, and the key then lives only in the Swarm's secret.
    holder = ChannelKeyHolder(path, writable=os.access(path.parent, os.W_OK) and path.exists())
    labels = {**owned_labels(kind=KIND_CHANNEL), CHANNEL_GENERATION_LABEL: str(generation)}
    action = CreateChannelSecret(channel_secret_name(generation), labels, generation)
    result = apply(api, [action], observed=observed, publisher=_NoPublisher(), calls=CallCounter(), keys=holder)
    if result.error is not None:
        raise SwarmgateError(result.error)
    print(f"{action.describe()}: the operators mount it and hand it to every proxy task")
    return 0


class _NoPublisher:
    def publish(self, extension: str, text: str, digest: str) -> None:
        raise AssertionError("rotate-key publishes nothing")
