#!/bin/sh
# swarmgate proxy agent: PID 1 of a proxy task. It runs nginx and applies the configs the operator
# pushes into it, in place (nginx -t, then a graceful reload of the same master). It never talks to
# the operator: the operator PUTs configs through nginx's own control server (the reserved name
# swarmgate-control.invalid on the HTTP listener, behind the token's digest) and GETs the status
# file this agent writes. So a proxy task starts, serves and keeps serving whether the operator is
# up or not, wherever it runs. Needs only a POSIX shell with busybox's applets and nginx.
#
# Environment (set by the operator on the proxy service; none of it depends on the operator):
#   SWARMGATE_TASK_ID         this task's ID ({{.Task.ID}}); every status names it      (required)
#   SWARMGATE_TOKEN_FILE      the token secret          [/run/secrets/swarmgate-proxy-token]
#   SWARMGATE_CONFIG_PATH     the live nginx config      [/etc/nginx/nginx.conf]
#   SWARMGATE_BOOTSTRAP_PATH  served when no saved config passes nginx -t  [/swarmgate/bootstrap.conf]
#   SWARMGATE_DIR             inbox, status, auth include; the rendered configs name it [/var/lib/swarmgate]
#   SWARMGATE_STATE_DIR       last config served, kept across tasks on this node (a named volume)
#                             [$SWARMGATE_DIR/state]
#   SWARMGATE_NGINX           nginx binary               [nginx]
#
# Files (protocol swarmgate/2):
#   $DIR/auth/token.conf  `"~^Bearer sha256:HEX$" 1;`, the line nginx's $swarmgate_authorized map
#                         includes. HEX is the sha256 of the token file, the digest the operator
#                         keeps as a label on the token secret. Root only: the master reads it.
#   $DIR/inbox/config     where nginx puts a PUT (renamed into place whole). First line
#                         `swarmgate/2 config DIGEST`, then the config; DIGEST = sha256 hex of the rest.
#   $DIR/status           `swarmgate/2 TASK ok DIGEST` (serves DIGEST; `-` for the bootstrap), or
#                         `swarmgate/2 TASK error REJECTED SERVED` followed by why (at most 2000 bytes).
#   $STATE/config         the last config this node served, in the inbox's format.
set -u
TASK=${SWARMGATE_TASK_ID:?SWARMGATE_TASK_ID must name this task}
TOKEN_FILE=${SWARMGATE_TOKEN_FILE:-/run/secrets/swarmgate-proxy-token}
CONF=${SWARMGATE_CONFIG_PATH:-/etc/nginx/nginx.conf}
BOOTSTRAP=${SWARMGATE_BOOTSTRAP_PATH:-/swarmgate/bootstrap.conf}
DIR=${SWARMGATE_DIR:-/var/lib/swarmgate}
STATE=${SWARMGATE_STATE_DIR:-$DIR/state}
NGINX=${SWARMGATE_NGINX:-nginx}
PROTOCOL=swarmgate/2
INBOX=$DIR/inbox
WORK=$DIR/work

log() { echo "swarmgate-agent: $*" >&2; }
pause() { sleep "$1" & wait $!; } # a trapped signal ends the wait at once
nginx_alive() { kill -0 "$nginx_pid" 2>/dev/null; }

# The agent's whole state: `phase` (starting -> serving -> stopping) and `serving`, the digest nginx
# serves now (`-` for the bootstrap). Everything else is local to one step.
phase=starting
serving=-
nginx_pid=""

stop() {
	phase=stopping
	# Before its workers exist nginx may not have installed its handlers yet, and a signal then kills
	# it outright; the start-up wait sends the QUIT once nginx is ready.
	[ -n "$nginx_pid" ] && [ -n "$(workers)" ] && kill -QUIT "$nginx_pid" 2>/dev/null # graceful
}
trap stop TERM QUIT INT

workers() { # pids of the nginx master's children (its workers), one per line
	for stat in /proc/[0-9]*/stat; do
		line=""
		read -r line 2>/dev/null <"$stat" || continue
		# `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so cut after the last `)`.
		fields=${line##*)}
		fields=${fields# }
		ppid=${fields#* }
		ppid=${ppid%% *}
		if [ -n "$nginx_pid" ] && [ "$ppid" = "$nginx_pid" ]; then
			pid=${stat#/proc/}
			echo "${pid%/stat}"
		fi
	done
}

write_status() { # write_status LINE [MESSAGE_FILE]: replaced whole, so a reader never sees half
	{
		echo "$1"
		if [ $# -gt 1 ]; then head -c 2000 "$2"; fi
	} >"$DIR/status.new" && chmod 644 "$DIR/status.new" && mv "$DIR/status.new" "$DIR/status"
}

unpack() { # unpack FILE OUT: the config in a swarmgate/2 file to OUT; prints its digest; 1 if invalid
	first=""
	read -r first <"$1" || return 1
	case "$first" in "$PROTOCOL config "*) ;; *) return 1 ;; esac
	digest=${first#"$PROTOCOL config "}
	case "$digest" in *[!0-9a-f]*) return 1 ;; esac
	[ ${#digest} -eq 64 ] || return 1
	tail -n +2 "$1" >"$2" || return 1
	sum=$(sha256sum <"$2") || return 1
	[ "${sum%% *}" = "$digest" ] || return 1
	echo "$digest"
}

check() { # check: nginx -t on the file at the live path (relative includes resolve as they will)
	"$NGINX" -t -q -c "$CONF" -g 'daemon off;' >"$WORK/message" 2>&1
}

# After a HUP the old workers keep accepting until they get their shutdown order, which takes a
# while on a busy machine. Wait (at most 5 s) until new workers run and the old ones are gone, so
# "ok" means new connections get the new config; the master has read the file by then, so the next
# apply cannot overwrite it under the master's feet.
reloaded() { # reloaded "OLD PIDS": 0 when new workers replaced them, 1 when none came
	tries=0
	fresh=0
	while [ "$tries" -lt 50 ]; do
		fresh=0
		old_left=0
		for p in $(workers); do
			case " $1 " in *" $p "*) old_left=1 ;; *) fresh=1 ;; esac
		done
		if [ "$fresh" = 1 ] && [ "$old_left" = 0 ]; then return 0; fi
		pause 0.1
		tries=$((tries + 1))
	done
	[ "$fresh" = 1 ] # new workers, but old ones still finish long requests: serving all the same
}

reject() { # reject DIGEST WHY_FILE: the last good config stays; the status says why
	write_status "$PROTOCOL $TASK error $1 $serving" "$2"
	log "rejected $1: $(head -n 1 "$2")"
}

apply() { # apply FILE: the pushed file in FILE, read once, start to end
	if ! digest=$(unpack "$1" "$WORK/candidate"); then
		echo "not a $PROTOCOL config whose first line names the sha256 of the rest" >"$WORK/message"
		reject - "$WORK/message"
		return
	fi
	if [ "$digest" = "$serving" ]; then # pushed twice (an operator restarted mid-push): say so again
		write_status "$PROTOCOL $TASK ok $serving"
		return
	fi
	cp "$CONF" "$WORK/last-good" && cp "$WORK/candidate" "$CONF.new" && mv "$CONF.new" "$CONF" || return
	if ! check; then
		cp "$WORK/last-good" "$CONF"
		reject "$digest" "$WORK/message"
		return
	fi
	old=$(workers)
	kill -HUP "$nginx_pid" # `nginx -s reload` without trusting the config's pid path; same master
	# shellcheck disable=SC2086 # word splitting joins the pids onto one line
	if ! reloaded "$(echo $old)"; then
		cp "$WORK/last-good" "$CONF"
		echo "nginx passed -t but did not start new workers within 5 s" >"$WORK/message"
		reject "$digest" "$WORK/message"
		return
	fi
	serving=$digest
	# Saved for the next task on this node: it starts from here, not from the bootstrap.
	cp "$1" "$STATE/config.new" && mv "$STATE/config.new" "$STATE/config" || log "cannot save to $STATE"
	write_status "$PROTOCOL $TASK ok $serving"
	log "serving $serving"
}

# -- start --------------------------------------------------------------------------------------
umask 077
mkdir -p "$DIR/auth" "$WORK" "$INBOX" "$STATE" || exit 1
chmod 755 "$DIR" && chmod 700 "$DIR/auth" "$WORK" || exit 1
# nginx's workers (the config's `user`) create the pushed file; they may not list or read the inbox.
chmod 1733 "$INBOX" || exit 1
rm -f "$INBOX/config" "$DIR/auth/token.conf" # a previous container's leftovers
# Only the digest is written, and only by the shell: the token is never in an argv or a log.
if sum=$(sha256sum <"$TOKEN_FILE" 2>/dev/null); then
	# A regex entry: a plain key this long would overflow nginx's default map_hash_bucket_size.
	echo "\"~^Bearer sha256:${sum%% *}\$\" 1;" >"$DIR/auth/token.conf"
else
	log "cannot read $TOKEN_FILE: serving, but nothing can push a config"
fi

# The last config this node served, if it still passes nginx -t (its TLS secrets may be gone).
start_from="the bootstrap"
if [ -s "$STATE/config" ] && digest=$(unpack "$STATE/config" "$WORK/candidate") &&
	cp "$WORK/candidate" "$CONF" && check; then
	serving=$digest
	start_from="saved config $digest"
elif ! cp "$BOOTSTRAP" "$CONF"; then
	exit 1
fi
write_status "$PROTOCOL $TASK ok $serving"
"$NGINX" -c "$CONF" -g 'daemon off;' &
nginx_pid=$!
log "nginx started (pid $nginx_pid) from $start_from"

# Ready = the master has spawned workers; it installs its signal handlers before that. Until then
# no signal goes to nginx (a HUP before the handlers kills it with status 129).
while [ -z "$(workers)" ] && nginx_alive; do
	pause 0.05
done
if [ "$phase" = stopping ]; then
	kill -QUIT "$nginx_pid" 2>/dev/null
elif nginx_alive; then
	phase=serving
fi

while [ "$phase" = serving ] && nginx_alive; do
	# nginx renames a PUT into place whole; taking it away by rename leaves the inbox free.
	if mv "$INBOX/config" "$WORK/incoming" 2>/dev/null; then
		apply "$WORK/incoming"
	else
		pause 0.2
	fi
done

# Stopping: wait for nginx to finish its graceful shutdown. Otherwise nginx died by itself.
rc=0
while :; do
	wait "$nginx_pid"
	rc=$?
	nginx_alive || break # a second signal interrupts wait
done
if [ "$phase" = stopping ]; then
	log "stopped"
	exit 0
fi
log "nginx exited unexpectedly (status $rc)"
exit $((rc == 0 ? 1 : rc))
