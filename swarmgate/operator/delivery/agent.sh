#!/bin/sh
# swarmgate proxy agent: PID 1 of a proxy task. Runs nginx, long-polls the operator for its
# cluster's config, applies it in place (nginx -t, then a graceful reload of the same master)
# and reports what it serves. Needs only busybox sh/wget and nginx (stock nginx images).
#
# Environment (set by the operator on the proxy service):
#   SWARMGATE_ENDPOINT        http://addr:port of the operator's endpoint            (required)
#   SWARMGATE_CLUSTER         the cluster (extension) whose config this proxy serves (required)
#   SWARMGATE_TOKEN_FILE      bearer token file   [/run/secrets/swarmgate-proxy-token]
#   SWARMGATE_CONFIG_PATH     the live nginx config       [/etc/nginx/nginx.conf]
#   SWARMGATE_BOOTSTRAP_PATH  config served until the first one arrives  [/swarmgate/bootstrap.conf]
#   SWARMGATE_TASK_ID, SWARMGATE_NODE_ID, SWARMGATE_NODE_HOSTNAME
#                             identity in reports ({{.Task.ID}}, {{.Node.ID}}, {{.Node.Hostname}})
#   SWARMGATE_POLL_TIMEOUT    seconds before one long poll is abandoned; above the
#                             endpoint's hold (20 s)      [30]
#   SWARMGATE_NGINX           nginx binary                [nginx]
# Protocol: GET  /v1/proxy/config?cluster&task&node&hostname&have&failed -> 200, first line
#           "swarmgate/1 config DIGEST" + config text, or "swarmgate/1 unchanged DIGEST";
#           POST /v1/proxy/report?cluster&task&node&hostname&digest&status=ok|error, body = message.
set -u
: "${SWARMGATE_ENDPOINT:?}" "${SWARMGATE_CLUSTER:?}"
TOKEN_FILE=${SWARMGATE_TOKEN_FILE:-/run/secrets/swarmgate-proxy-token}
CONF=${SWARMGATE_CONFIG_PATH:-/etc/nginx/nginx.conf}
BOOTSTRAP=${SWARMGATE_BOOTSTRAP_PATH:-/swarmgate/bootstrap.conf}
POLL_TIMEOUT=${SWARMGATE_POLL_TIMEOUT:-30}
NGINX=${SWARMGATE_NGINX:-nginx}
ID="cluster=$SWARMGATE_CLUSTER&task=${SWARMGATE_TASK_ID:-}&node=${SWARMGATE_NODE_ID:-}"
ID="$ID&hostname=${SWARMGATE_NODE_HOSTNAME:-}"
WORK=$(mktemp -d /tmp/swarmgate-agent.XXXXXX) || exit 1

log() { echo "swarmgate-agent: $*" >&2; }

# One log line per state change (set_state KEY MESSAGE), so an absent operator does not
# flood the task's log while its errors vary (refused, reset, timed out).
state=""
set_state() { [ "$1" = "$state" ] || log "$2"; state=$1; }

# The token sits in wget's argv (busybox wget reads headers only from the command line);
# only this container's processes can see it. It is re-read each time, so a rotated
# secret needs no agent restart.
fetch() { # fetch OUT URL [wget args...]: a wget that stays interruptible and gives up in time
	out=$1 url=$2; shift 2
	wget -q -O "$out" --header "Authorization: Bearer $(cat "$TOKEN_FILE" 2>/dev/null)" "$@" \
		"$url" 2>"$WORK/wget.err" &
	wget_pid=$!
	# busybox's `wget -T` crashes in Debian's build: a watchdog ends a poll that outlives
	# POLL_TIMEOUT or nginx (the shell reaps nginx while it waits, so kill -0 then fails).
	(n=0; while [ "$n" -lt "$POLL_TIMEOUT" ] && kill -0 "$nginx_pid" 2>/dev/null; do
		sleep 1; n=$((n + 1))
	done; kill "$wget_pid" 2>/dev/null && echo "no answer in ${POLL_TIMEOUT}s" >"$WORK/wget.err") &
	watchdog=$!
	wait "$wget_pid"; rc=$? # returns early if a trapped signal arrives; stop() ends wget
	kill "$watchdog" 2>/dev/null; wget_pid=""; return $rc
}

pause() { sleep "$1" & wait $!; }
nginx_alive() { kill -0 "$nginx_pid" 2>/dev/null; }

stopping=0 wget_pid=""
stop() {
	stopping=1
	[ -n "$wget_pid" ] && kill "$wget_pid" 2>/dev/null
	kill -QUIT "$nginx_pid" 2>/dev/null # graceful: finish in-flight requests
}
trap stop TERM QUIT INT

# A restarted container keeps the config it had received; a new one starts from the bootstrap.
have="" failed=""
if [ -s "$CONF.digest" ] && [ -s "$CONF" ]; then have=$(cat "$CONF.digest"); else
	cp "$BOOTSTRAP" "$CONF" || exit 1
fi
"$NGINX" -c "$CONF" -g 'daemon off;' &
nginx_pid=$!
log "nginx started (pid $nginx_pid) serving ${have:-bootstrap}"

report_status="" report_digest=""
report() { # send the pending report; kept pending while the operator is away
	[ -n "$report_status" ] || return 0
	fetch "$WORK/report.out" "$SWARMGATE_ENDPOINT/v1/proxy/report?$ID&digest=$report_digest&status=$report_status" \
		--header "Content-Type: text/plain" --post-file "$WORK/message" || return 1
	report_status=""
}

workers() { # pids of the nginx master's children (its workers), one per line
	for stat in /proc/[0-9]*/stat; do
		read -r pid _ _ ppid _ <"$stat" 2>/dev/null || continue
		[ "$ppid" = "$nginx_pid" ] && echo "$pid"
	done
}

# After a HUP the old workers keep accepting until they get their shutdown order, which takes a
# while on a busy machine. Wait (at most 5 s) until new workers run and the old ones are gone, so
# "ok" means new connections get the new config; and the master has read the file by then, so the
# next apply cannot overwrite it under the master's feet.
reloaded() { # reloaded "OLD PIDS": 0 when new workers replaced them, 1 when none came
	n=0 fresh=0
	while [ "$n" -lt 50 ]; do
		fresh=0 old_left=0
		for p in $(workers); do case " $1 " in *" $p "*) old_left=1 ;; *) fresh=1 ;; esac; done
		[ "$fresh" = 1 ] && [ "$old_left" = 0 ] && return 0
		pause 0.1; n=$((n + 1))
	done
	[ "$fresh" = 1 ] # new workers, but old ones still finish long requests: serving all the same
}

apply() { # apply DIGEST CONFIG_FILE: the new file must pass nginx -t at the real path
	cp "$CONF" "$CONF.last-good" && cp "$2" "$CONF.new" && mv "$CONF.new" "$CONF" || return 1
	if "$NGINX" -t -q -c "$CONF" -g 'daemon off;' >"$WORK/message" 2>&1; then
		old=$(workers)
		# HUP is `nginx -s reload` without trusting the config's pid path; same master pid.
		kill -HUP "$nginx_pid" || return 1
		if ! reloaded "$(echo $old)"; then
			mv "$CONF.last-good" "$CONF"; failed=$1 report_status=error report_digest=$1
			echo "nginx passed -t but did not start new workers within 5 s" >"$WORK/message"
			log "rejected $1: nginx did not reload"; return 0
		fi
		have=$1 failed="" report_status=ok report_digest=$1
		echo "$1" >"$CONF.digest"; : >"$WORK/message"; log "serving $1"
	else
		mv "$CONF.last-good" "$CONF"; failed=$1
		head -c 2000 "$WORK/message" >"$WORK/msg.cut"; mv "$WORK/msg.cut" "$WORK/message"
		log "rejected $1: $(head -n 1 "$WORK/message")"; report_status=error report_digest=$1
	fi
}

backoff=1
while [ "$stopping" = 0 ] && nginx_alive; do
	if report && fetch "$WORK/resp" "$SWARMGATE_ENDPOINT/v1/proxy/config?$ID&have=$have&failed=$failed"; then
		backoff=1
		magic="" kind="" digest=""
		read -r magic kind digest _ <"$WORK/resp"
		case "$magic $kind" in
		"swarmgate/1 config") set_state up "connected to $SWARMGATE_ENDPOINT"
			tail -n +2 "$WORK/resp" >"$WORK/config"; apply "$digest" "$WORK/config" ;;
		"swarmgate/1 unchanged") set_state up "connected to $SWARMGATE_ENDPOINT" ;;
		*) set_state odd "unexpected answer from $SWARMGATE_ENDPOINT: $(head -c 80 "$WORK/resp")"
			pause "$backoff" ;;
		esac
	else
		[ "$stopping" = 0 ] && nginx_alive || break
		err=$(head -n 1 "$WORK/wget.err")
		case "$err" in *"server returned error"*) key=$err ;; *) key=unreachable ;; esac
		set_state "$key" "operator unreachable ($err), retrying up to every 10s"
		pause "$backoff"; backoff=$((backoff * 2)); [ "$backoff" -gt 10 ] && backoff=10
	fi
done

# Stopping: wait for nginx to finish its graceful shutdown. Otherwise nginx died by itself.
while :; do wait "$nginx_pid"; rc=$?; nginx_alive || break; done # a 2nd signal interrupts wait
rm -rf "$WORK"
if [ "$stopping" = 1 ]; then log "stopped"; exit 0; fi
log "nginx exited unexpectedly (status $rc)"; exit $((rc == 0 ? 1 : rc))
