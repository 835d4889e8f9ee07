#!/bin/sh
# First process of one lab node, started by cluster.py inside the node's own network, UTS, mount
# and pid namespaces: usage node-init.sh NAME DATA_DIR RUN_DIR
# (pids inside the node are namespace-local; the host-side pids are recorded in .lab/state.json.)
# Why each step:
#  - hostname: Swarm names the node after it (lb-00, ...).
#  - tmpfs on /run: /var/run is a symlink to /run, so containers that bind-mount
#    /var/run/docker.sock get *this* node's engine; it also hides the host's /run/containerd so
#    dockerd starts its own containerd, and keeps exec-root, pidfiles and xtables.lock per node.
#    / is already rprivate (unshare --propagation private): nothing leaks back to the host.
#  - /etc/docker: see below.
#  - docker-init (tini) as pid 1 reaps orphaned shims; when dockerd dies tini exits, and the
#    kernel then kills everything left in the pid namespace: a killed node leaves no processes.
set -eu
name=$1 data=$2 rundir=$3
hostname "$name"
mount -t tmpfs -o mode=755,size=64m tmpfs /run
mkdir -p /run/lock
# dockerd keeps its engine identity in /etc/docker/key.json: a per-node folder over /etc/docker
# gives every node its own engine ID and writes nothing into the host's /etc.
mkdir -p "$data/etc-docker"
if [ -d /etc/docker ]; then mount --bind "$data/etc-docker" /etc/docker; fi
printf '{}\n' > /run/daemon.json  # never read the host's /etc/docker/daemon.json
# No name server is reachable from the lab: the engine's own look-ups (the registry lookup that
# `docker service create` asks for) go to this node's loopback and fail at once instead of waiting
# ~20 s for a name server outside the lab.
printf 'nameserver 127.0.0.1\n' > /run/resolv.conf
mount --bind /run/resolv.conf /etc/resolv.conf
# No registry is reachable and lab traffic must stay in the lab: Swarm tasks use the local image
# instead of trying a pull first (a documented dockerd switch; without it every task start waits
# for a failing pull from docker.io).
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
exec /usr/bin/docker-init -- /usr/sbin/dockerd \
  --config-file /run/daemon.json \
  --data-root "$data/docker" \
  --exec-root /run/docker \
  --pidfile /run/docker.pid \
  --cgroup-parent "sglab-$name" \
  -H unix:///run/docker.sock \
  -H "unix://$rundir/docker.sock"
