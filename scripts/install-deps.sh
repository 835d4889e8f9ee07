#!/usr/bin/env bash
# Installs the machine packages swarmgate's lab, tests and demo need, only when one is missing.
# docker.io: the engines of the lab; nginx: `nginx -t` of rendered configs and the lab's proxy image
# (libnginx-mod-stream: its stream module, for SSL passthrough; libnginx-mod-http-lua and lua-resty-core:
# lua-nginx-module, for LuaBalancer);
# busybox-static: shell and wget inside the lab images; mawk: the agent's traffic counting in the lab's proxy image (as in Debian's nginx images); prometheus: the observability proof;
# gcc + libc6-dev: the lab demo backend is a small static C program (lab/images/demo.c);
# time: GNU time, the peak memory of `nginx -t` in `make bench`; wrk: the HTTP load client of
# `make dataplane`; haproxy + caddy: the peers `make dataplane` measures swarmgate's proxy against
# (bench/peers.py); tcpdump: the channel test captures pushes on the wire; pebble: a test ACME CA
# (and its DNS, pebble-challtestsrv) for the ACME client's test; chromium: the headless browser that
# opens the status page in the lab test (and screenshots it); tidy: the status page's markup check.
set -euo pipefail
pkgs=(docker.io nginx-light libnginx-mod-stream libnginx-mod-http-lua lua-resty-core busybox-static mawk iproute2 iptables util-linux prometheus curl openssl gcc libc6-dev python3.11-minimal libpython3.11-stdlib time wrk haproxy caddy tcpdump pebble chromium tidy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  # Services these packages ship (dockerd, nginx, caddy and haproxy on port 80, prometheus) must not
  # start on a machine that runs an init system: the lab and the benchmarks start what they need, on
  # their own addresses. policy-rc.d answering 101 is Debian's way to say "start nothing".
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
