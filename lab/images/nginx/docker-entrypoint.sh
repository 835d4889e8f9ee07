#!/bin/sh
# Like nginx:alpine's entrypoint: when the command is nginx, run /docker-entrypoint.d/*.sh first.
set -e
if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
    for f in /docker-entrypoint.d/*.sh; do
        if [ -x "$f" ]; then "$f"; fi
    done
fi
exec "$@"
