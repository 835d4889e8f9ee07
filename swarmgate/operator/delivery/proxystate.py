"""What each cluster's proxies should serve and what they say they serve (in memory, thread-safe).

The reconciler publishes a rendered config per cluster (a cluster is an extension here); the pusher
reads it, pushes it, and records what each proxy task's agent says it serves. No network or Docker
here, only a lock, a condition and a clock (injectable). Published and per-proxy times make
convergence measurable: publish → every proxy task of the cluster serves the new digest. Two
optional hooks hand those events to metrics: `on_converged(cluster, seconds)` once per published
digest, and `on_reload(cluster, ok)` per push that ended (each is one `nginx -t` + reload attempt).
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

# "waiting": the task holds a push until the certificate courier's files it names exist (not current,
# not a rejection).
ReportStatus = Literal["ok", "error", "waiting", "none"]


@dataclass(frozen=True)
class PublishedConfig:
    cluster: str
    digest: str
    text: str
    published_at: float  # clock time of the publish that made this digest current
    converged_at: float | None = None  # first time every live proxy served it; None until then


@dataclass(frozen=True)
class ProxyRecord:
    """One proxy task as its agent last described itself."""

    task: str
    cluster: str
    node: str
    hostname: str
    served_digest: str  # "" while it serves the bootstrap
    serving_since: float | None  # when it first said it serves served_digest
    last_seen: float
    last_status: ReportStatus = "none"
    last_error: str = ""  # nginx -t's message for rejected_digest
    rejected_digest: str = ""
    waiting_digest: str = ""  # the push the task holds for its certificate files ("" when none)
    waiting_for: str = ""  # what it says it waits for (`waiting: N certificate files`)


class ProxyState:
    """The store the reconciler publishes to, the pusher records into and `/v1/status` reads."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        stale_after: float = 90.0,
        on_converged: Callable[[str, float], None] | None = None,
        on_reload: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_converged = on_converged
        self._on_reload = on_reload
        self._stale_after = stale_after  # a task unheard of this long is gone (it is read every few s)
        self._changed = threading.Condition()
        self._configs: dict[str, PublishedConfig] = {}
        self._proxies: dict[str, ProxyRecord] = {}
        # Per cluster, the proxy tasks the Swarm means to run (from the reconciler's snapshot). A
        # cluster is converged only when every one of them serves the current digest: a task not
        # heard from yet (just scheduled, still starting) holds convergence back.
        self._expected: dict[str, frozenset[str]] = {}
        # Digests a task that rejected them may be pushed once more (planning/undelivered.py: a
        # certificate file the courier brings late), and the tasks that have been.
        self._repush: dict[str, set[str]] = {}

    # -- the reconciler's side ------------------------------------------------------------
    def publish(self, cluster: str, text: str, digest: str) -> None:
        """Make this config the cluster's current one; publishing the current digest again is a no-op
        (publish time and convergence are kept), so a reconcile pass may publish every time."""
        with self._changed:
            old = self._configs.get(cluster)
            if old is not None and old.digest == digest:
                return
            self._configs[cluster] = PublishedConfig(cluster, digest, text, self._clock())
            self._note_convergence(cluster)
            self._changed.notify_all()

    def allow_repush(self, digest: str) -> None:
        """Each task that rejected `digest` may be pushed it once more (the reason has passed)."""
        with self._changed:
            self._repush[digest] = set()
            self._changed.notify_all()

    def take_repush(self, task: str, digest: str) -> bool:
        """Whether `task` may be pushed `digest` again although it rejected it (once per allowance)."""
        with self._changed:
            done = self._repush.get(digest)
            if done is None or task in done:
                return False
            done.add(task)
            return True

    def current(self, cluster: str) -> PublishedConfig | None:
        with self._changed:
            return self._configs.get(cluster)

    def clusters(self) -> list[str]:
        with self._changed:
            return sorted(set(self._configs) | {p.cluster for p in self._proxies.values()})

    def proxies(self, cluster: str | None = None) -> list[ProxyRecord]:
        """Live proxies (seen within `stale_after`), of one cluster or all, sorted by task."""
        with self._changed:
            return self._live(cluster)

    def reports(self) -> list[ProxyRecord]:
        """Every proxy ever heard of and not forgotten, stale ones included."""
        with self._changed:
            return sorted(self._proxies.values(), key=lambda p: p.task)

    def all_current(self, cluster: str) -> bool:
        """True when a config is published and at least one live proxy exists and all serve it."""
        with self._changed:
            return self._all_current(cluster)

    def wait_converged(self, cluster: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._all_current(cluster), timeout)

    def retain_tasks(self, tasks_by_cluster: Mapping[str, Iterable[str]]) -> None:
        """The proxy tasks the Swarm means to run, per cluster: any other task is forgotten, and each
        of these must serve the current digest before the cluster counts as converged."""
        expected = {c: frozenset(ids) for c, ids in tasks_by_cluster.items()}
        keep: set[str] = set().union(*expected.values())
        with self._changed:
            self._expected = expected
            for task in [t for t in self._proxies if t not in keep]:
                del self._proxies[task]
            for cluster in list(self._configs):
                self._note_convergence(cluster)
            self._changed.notify_all()

    # -- the pusher's side -----------------------------------------------------------------
    def record_status(
        self, *, cluster: str, task: str, node: str, hostname: str, serving: str, rejected: str = "",
        message: str = "", pushed: bool = False, waiting: str = "",
    ) -> None:
        """What one proxy task's agent says; `pushed` when it answers a push of ours (a reload);
        `waiting`: the push it holds for its certificate files (no reload yet)."""
        if pushed and self._on_reload is not None and not waiting:
            self._on_reload(cluster, not rejected)
        # The last error stays visible (with last_status "ok") until another one replaces it.
        status: ReportStatus = "error" if rejected else "waiting" if waiting else "ok"
        self._record(cluster=cluster, task=task, node=node, hostname=hostname, serving=serving,
                     status=status, error=message if rejected else None, rejected=rejected or None,
                     waiting=(waiting, message if waiting else ""))

    def _record(self, *, cluster: str, task: str, node: str, hostname: str, serving: str | None,
                status: ReportStatus | None = None, error: str | None = None,
                rejected: str | None = None, waiting: tuple[str, str] | None = None) -> None:
        now = self._clock()
        with self._changed:
            old = self._proxies.get(task)
            rec = old or ProxyRecord(task, cluster, node, hostname, "", None, now)
            rec = replace(rec, cluster=cluster, node=node, hostname=hostname, last_seen=now)
            if serving is not None and (old is None or serving != old.served_digest):
                rec = replace(rec, served_digest=serving, serving_since=now)
            if status is not None:
                rec = replace(rec, last_status=status)
            if error is not None:
                rec = replace(rec, last_error=error)
            if rejected is not None:
                rec = replace(rec, rejected_digest=rejected)
            if waiting is not None:
                rec = replace(rec, waiting_digest=waiting[0], waiting_for=waiting[1])
            self._proxies[task] = rec
            self._note_convergence(cluster)
            self._changed.notify_all()

    # -- helpers, called with the lock held -------------------------------------------------
    def _live(self, cluster: str | None) -> list[ProxyRecord]:
        horizon = self._clock() - self._stale_after
        return sorted(
            (p for p in self._proxies.values()
             if p.last_seen >= horizon and (cluster is None or p.cluster == cluster)),
            key=lambda p: p.task,
        )

    def _all_current(self, cluster: str) -> bool:
        cfg = self._configs.get(cluster)
        if cfg is None:
            return False
        expected = self._expected.get(cluster)
        if expected is not None:
            served = {p.task: p.served_digest for p in self._live(cluster)}
            return bool(expected) and all(served.get(t) == cfg.digest for t in expected)
        live = self._live(cluster)
        return bool(live) and all(p.served_digest == cfg.digest for p in live)

    def _note_convergence(self, cluster: str) -> None:
        cfg = self._configs.get(cluster)
        if cfg is not None and cfg.converged_at is None and self._all_current(cluster):
            converged_at = self._clock()
            self._configs[cluster] = replace(cfg, converged_at=converged_at)
            if self._on_converged is not None:
                # The publish happens in the pass that first computed this digest: the detected change.
                self._on_converged(cluster, converged_at - cfg.published_at)
