#!/usr/bin/env bash
# The seed's scenario on the running lab, step by step, as a user of Interlock would type it.
#
#   scripts/demo.sh up     label the LB nodes, store the operator's TOML as a Swarm config, start the
#                          operator as a Swarm service, pin its proxy, deploy `demo`, then show the
#                          seed's `curl -vs -H "Host: demo.local" http://<lb-00>/ping` and its answer
#   scripts/demo.sh down   remove what `up` made (services, configs, the channel key's secrets); the lab
#                          itself keeps running (`make lab-down` stops it)
#
# `make demo` brings the lab up first (`lab/lab.py up`), then runs `up`. Only lab addresses are ever
# sent a request. The lab has no image registry, so the two `service create` commands carry
# `--no-resolve-image` (the CLI would otherwise wait for a registry lookup of the image digest to time
# out); on a cluster with a registry, leave it out and the commands are the seed's, word for word.
# Where several people share one lab, run it under their common lock, e.g.
# `flock /tmp/swarmgate-lab.lock scripts/demo.sh up` (this script takes no lock itself).
# DEMO_DETACH=1 (the lab tests' harness, which then waits for its own proof of convergence): the
# three `service create/update` commands get `--detach`, skipping the CLI's 5-second watch of each
# service's tasks; `up` still waits for the operator to create the proxy and for demo.local on lb-00.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -f "$REPO/.lab/env" ]; then
  echo "demo: no lab is running; start one with \`make lab-up\` (or run \`make demo\`)" >&2
  exit 2
fi
# shellcheck disable=SC1091
. "$REPO/.lab/env" # DOCKER_HOST = the first manager; LAB_LB_NODES, LAB_NODE_<name> addresses

OPERATOR=interlock
PROXY=interlock-proxy
CONFIG=service.interlock.conf
CHANNEL_SECRET=swarmgate-channel
OWNED=swarmgate.managed-by=swarmgate

# Under DEMO_DETACH=1 only; otherwise the commands stay the seed's, word for word.
detach=() demo_detach=--detach=false
if [ "${DEMO_DETACH:-}" = 1 ]; then detach=(--detach) demo_detach=--detach; fi

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
run() { printf '$> %s\n' "$*"; "$@"; }

node_address() { # LAB_NODE_lb_00 for lb-00
  local var="LAB_NODE_${1//-/_}"
  echo "${!var}"
}

# Requests go to lab nodes only: refuse an address the kernel would not send through the lab bridge.
lab_route_ok() {
  local route
  route=$(ip route get "$1" 2>/dev/null || true)
  [[ " $route " == *" dev ${LAB_BRIDGE} "* ]]
}

wait_until() { # wait_until SECONDS WHAT COMMAND...
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: timed out after ${limit}s waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

remove_when_unused() { # a config/secret stays "in use" until the tasks that mount it are gone
  local kind=$1 name=$2 deadline=$((SECONDS + 60))
  while docker "$kind" inspect "$name" >/dev/null 2>&1; do
    docker "$kind" rm "$name" >/dev/null 2>&1 && return 0
    [ "$SECONDS" -lt "$deadline" ] || { echo "demo: could not remove $kind $name" >&2; return 1; }
    sleep 0.5
  done
}

operator_gone() { # no manager runs a container of the operator's service any more
  local m sock
  for m in $LAB_MANAGERS; do
    sock="LAB_SOCK_${m//-/_}"
    [ -z "$(docker -H "${!sock}" ps -q --filter "label=com.docker.swarm.service.name=$OPERATOR")" ] || return 1
  done
}

down() {
  local removed=0
  # The operator first, and its task gone, so it cannot re-create the proxy it owns.
  if docker service inspect "$OPERATOR" >/dev/null 2>&1; then
    docker service rm "$OPERATOR" >/dev/null && removed=1
    wait_until 60 "the operator's container to stop" operator_gone
  fi
  for svc in demo "$PROXY" "$PROXY-certs"; do
    if docker service inspect "$svc" >/dev/null 2>&1; then docker service rm "$svc" >/dev/null && removed=1; fi
  done
  for cfg in "$CONFIG" $(docker config ls -q --filter "label=$OWNED"); do
    if docker config inspect "$cfg" >/dev/null 2>&1; then remove_when_unused config "$cfg" && removed=1; fi
  done
  # Every generation of the channel key: swarmgate-channel, swarmgate-channel-N.
  for secret in $(docker secret ls --format '{{.Name}}' --filter "name=$CHANNEL_SECRET"); do
    case "$secret" in
      "$CHANNEL_SECRET" | "$CHANNEL_SECRET"-[1-9]*) remove_when_unused secret "$secret" && removed=1 ;;
    esac
  done
  return $((1 - removed))
}

up() {
  read -r -a lb_nodes <<<"$LAB_LB_NODES"
  if [ "${#lb_nodes[@]}" -lt 2 ]; then
    echo "demo: the seed needs two load-balancer nodes; this lab has ${#lb_nodes[@]}" >&2
    exit 2
  fi
  if docker service inspect "$OPERATOR" >/dev/null 2>&1 || docker config inspect "$CONFIG" >/dev/null 2>&1; then
    say "A previous demo is deployed: removing it first"
    down || true
  fi
  local lb0=${lb_nodes[0]} lb1=${lb_nodes[1]}
  local lb0_addr
  lb0_addr=$(node_address "$lb0")
  lab_route_ok "$lb0_addr" || { echo "demo: $lb0_addr is not a lab address on $LAB_BRIDGE" >&2; exit 2; }

  say "1. Label the load-balancer nodes"
  run docker node update --label-add nodetype=loadbalancer "$lb0"
  run docker node update --label-add nodetype=loadbalancer "$lb1"
  run docker node inspect -f '{{ .Spec.Labels  }}' "$lb0"
  run docker node inspect -f '{{ .Spec.Labels  }}' "$lb1"

  say "2. The operator's configuration (the seed's TOML; ProxyImage is the lab's nginx image)"
  printf '$> cat << EOF | docker config create %s -\n' "$CONFIG"
  grep -v '^#' "$REPO/lab/seed-config.toml"
  echo EOF
  grep -v '^#' "$REPO/lab/seed-config.toml" | docker config create "$CONFIG" -

  say "3. The operator, as a Swarm service on a manager"
  run docker service create --no-resolve-image --quiet "${detach[@]}" \
    --name "$OPERATOR" \
    --mount src=/var/run/docker.sock,dst=/var/run/docker.sock,type=bind \
    --constraint node.role==manager \
    --publish mode=host,target=8080 \
    --config src="$CONFIG",target=/config.toml \
    swarmgate/operator:lab -D run -c /config.toml

  say "4. Pin the proxy service (the operator has created it) to the load-balancer nodes"
  wait_until 60 "the operator to create $PROXY" docker service inspect "$PROXY"
  run docker service update --quiet "${detach[@]}" --constraint-add node.labels.nodetype==loadbalancer "$PROXY"

  say "5. The application"
  # Ask lb-00 ten times a second from the moment the service is created, to show how soon it routes.
  local first200
  first200=$(mktemp)
  local start_ns
  start_ns=$(date +%s%N)
  (
    end=$((SECONDS + 120))
    until curl -fsS -o /dev/null --max-time 1 -H "Host: demo.local" "http://$lb0_addr/ping" 2>/dev/null; do
      [ "$SECONDS" -lt "$end" ] || exit 1
      sleep 0.1
    done
    date +%s%N >"$first200"
  ) &
  local poller=$!
  run docker service create --no-resolve-image \
    --name demo \
    "$demo_detach" \
    --label com.docker.lb.hosts=demo.local \
    --label com.docker.lb.port=8080 \
    --publish mode=host,target=8080 \
    --env METADATA="demo" \
    swarmgate/demo:lab || { kill "$poller" 2>/dev/null; exit 1; }
  if ! wait "$poller"; then
    rm -f "$first200"
    echo "demo: demo.local did not answer 200 on $lb0 within 120 s" >&2
    exit 1
  fi
  echo "($lb0 answered 200 for demo.local $((($(cat "$first200") - start_ns) / 1000000)) ms after \`docker service create demo\` started)"
  rm -f "$first200"

  say "6. The seed's request, to $lb0 ($lb0_addr)"
  printf '$> curl -vs -H "Host: demo.local" http://%s/ping\n' "$lb0_addr"
  curl -vs --max-time 5 -H "Host: demo.local" "http://$lb0_addr/ping" 2>&1
  echo
  say "Where the proxies run"
  run docker service ps --filter desired-state=running --format '{{.Name}} {{.Node}} {{.CurrentState}}' "$PROXY"
  echo
  echo "Try the other LB node: curl -vs -H \"Host: demo.local\" http://$(node_address "$lb1")/ping"
  echo "Remove the demo: make demo-down (the lab keeps running; \`make lab-down\` stops it)"
}

case "${1:-}" in
  up) up ;;
  down)
    if down; then echo "demo removed; the lab keeps running (\`make lab-down\` stops it)"
    else echo "nothing to remove; the lab keeps running (\`make lab-down\` stops it)"; fi
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
