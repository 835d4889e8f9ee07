#!/bin/sh
# /usr/bin/wget of the lab images. Debian's busybox 1.35 is built without wget's timeout option
# and segfaults on `wget -T N` (checked on this machine); nginx:alpine's wget honours it. Here
# -T N / --timeout=N are taken out and enforced with busybox `timeout` (a whole-request limit, not
# an idle limit; exit status 143 on expiry). This helps wget run by exec (docker exec, exec-form
# healthchecks); busybox sh runs its own applet for a bare `wget` and does not come here -- in
# shell scripts use `timeout N wget ...` or a watchdog instead of -T (see lab/README.md).
t=
n=$#
while [ "$n" -gt 0 ]; do
    a=$1; shift; n=$((n - 1))
    case $a in
        -T | --timeout) t=$1; shift; n=$((n - 1)) ;;
        -T*) t=${a#-T} ;;
        --timeout=*) t=${a#--timeout=} ;;
        *) set -- "$@" "$a" ;;
    esac
done
if [ -n "$t" ]; then
    exec /usr/bin/busybox timeout "$t" /usr/bin/busybox wget "$@"
fi
exec /usr/bin/busybox wget "$@"
