#!/bin/sh
# swarmgate proxy agent: PID 1 of a proxy task. It runs nginx and applies the configs the operator
# pushes into it, in place (nginx -t, then a graceful reload of the same master). It never talks to
# the operator: the operator PUTs configs through nginx's own control server and GETs the status
# file this agent writes. So a proxy task starts, serves and keeps serving whether the operator is
# up or not, wherever it runs. Needs only a POSIX shell with busybox's applets and nginx.
#
# Environment (set by the operator on the proxy service; none of it depends on the operator):
#   SWARMGATE_TASK_ID         this task's ID ({{.Task.ID}}); pushes name it, so does every status (required)
#   SWARMGATE_KEY_FILE        the channel key secret     [/run/secrets/swarmgate-channel]
#   SWARMGATE_CONFIG_PATH     the live nginx config      [/etc/nginx/nginx.conf]
#   SWARMGATE_BOOTSTRAP_PATH  served when no verified saved config passes nginx -t
#                             [/swarmgate/bootstrap.conf]
#   SWARMGATE_DIR             the agent's directory; the rendered configs name it  [/var/lib/swarmgate]
#   SWARMGATE_STATE_DIR       last config served and the fence, kept across tasks on this node (a named
#                             volume) [$SWARMGATE_DIR/state]
#   SWARMGATE_NGINX           nginx binary               [nginx]
#
# Protocol swarmgate/3. The key file (one Swarm secret) is `swarmgate/3 channel-key HMACHEX` and then
# a self-signed certificate and its private key (PEM; nginx skips the first line). The control server
# answers only on the TLS listener, only to SNI/Host swarmgate-control.invalid, and only to a client
# presenting that same certificate; the operator pins it as the server's. Every push and every status
# carries an HMAC-SHA256 with the key's HMACHEX. Files:
#   $DIR/key/channel.pem      the agent's copy of the key file (dir 0700, file 0600, root): the control
#                             server's certificate, key and only client CA. Read by the nginx master.
#   $DIR/control/server.conf  everything inside the control server but its listen and name: TLS, client
#                             verification, body limit, locations. Written by the agent only; the
#                             pushed config includes it (`include $DIR/control/*.conf;`) and may not
#                             change it. Without a usable key: `ssl_reject_handshake on`, nothing else.
#   $DIR/inbox/config         where nginx puts a PUT (renamed into place whole). First line
#                             `swarmgate/3 config TASK TERM SEQ DIGEST MAC`, then the config text.
#                             MAC = HMAC(key, that line before ` MAC`); DIGEST = sha256 hex of the text.
#   $DIR/status               `swarmgate/3 status TASK ok SERVED TERM SEQ`, or `swarmgate/3 status TASK
#                             error REJECTED SERVED TERM SEQ` followed by why (at most 2000 bytes), then
#                             `swarmgate/3 mac HEX` = HMAC(key, every byte before that line). SERVED is
#                             `-` for the bootstrap; TERM SEQ is the fence (`0 0`: none accepted yet).
#   $DIR/work/                private scratch (0700): the HMAC key's inner and outer pads among others.
#   $STATE/config             the last config this node served: the whole signed body as pushed.
#   $STATE/fence              the signed header line of the newest authentic push accepted here.
#
# A push is applied only if, in this order: its header parses; its MAC is right; it names this task;
# its (TERM, SEQ) is greater than the fence; the text's sha256 is DIGEST. Anything else is refused:
# logged, nothing changes, the status stays as it was. An accepted push advances the fence (persisted
# before anything else happens) even if its config is then rejected, so no push is ever replayed, not
# even after a restart, and a deposed leader's older TERM is refused (the status shows the newer one).
# A saved config is served at start only if its MAC and digest verify (it may name an earlier task).
# Content policy, checked before `nginx -t`: a pushed config may not run workers as root (`user root`
# or `user 0`; after each reload no worker may run as uid 0, else the last good config comes back),
# may not set `master_process`, must include the agent's control file exactly once, must not name
# swarmgate-control other than in that server's server_name, nor this directory other than in that
# include, nor the swarmgate-channel secret. So a push changes routes, never the channel.
# The key and values derived from it live in the shell's memory and in root-only files, never in an
# argv (printf is a shell builtin) or a log. MACs are compared as strings: this is a shell, and the
# control server only talks to key holders in the first place.
set -u
export LC_ALL=C # byte semantics for ranges and lengths
TASK=${SWARMGATE_TASK_ID:?SWARMGATE_TASK_ID must name this task}
KEY_FILE=${SWARMGATE_KEY_FILE:-/run/secrets/swarmgate-channel}
CONF=${SWARMGATE_CONFIG_PATH:-/etc/nginx/nginx.conf}
BOOTSTRAP=${SWARMGATE_BOOTSTRAP_PATH:-/swarmgate/bootstrap.conf}
DIR=${SWARMGATE_DIR:-/var/lib/swarmgate}
STATE=${SWARMGATE_STATE_DIR:-$DIR/state}
NGINX=${SWARMGATE_NGINX:-nginx}
PROTOCOL=swarmgate/3
INBOX=$DIR/inbox
WORK=$DIR/work
KEYDIR=$DIR/key
CONTROL=$DIR/control
MIN_BODY=33554432 # 32 MiB: the smallest push size limit (it grows with the config served)

log() { echo "swarmgate-agent: $*" >&2; }
pause() { sleep "$1" & wait $!; } # a trapped signal ends the wait at once
nginx_alive() { kill -0 "$nginx_pid" 2>/dev/null; }

# The agent's whole state: `phase` (starting -> serving -> stopping), `serving` (the digest nginx
# serves now, `-` for the bootstrap), `keyed` (1 when the channel key is loaded) and the fence
# `fterm fseq` (the newest push accepted). Everything else is local to one step.
phase=starting
serving=-
keyed=0
fterm=0
fseq=0
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

# -- the channel key ----------------------------------------------------------------------------
is_hex64() { case $1 in *[!0-9a-f]*) return 1 ;; esac && [ ${#1} -eq 64 ]; }
is_task() { case $1 in "" | *[!0-9A-Za-z]*) return 1 ;; esac && [ ${#1} -le 64 ]; }
is_number() { # decimal, 1 to 18 digits, no sign, no leading zero but `0` itself: fits shell arithmetic
	case $1 in
	0) return 0 ;;
	[1-9] | [1-9]*[0-9]) case $1 in *[!0-9]*) return 1 ;; esac ;;
	*) return 1 ;;
	esac
	[ ${#1} -le 18 ]
}

hex_bytes() { # hex_bytes HEX: writes the bytes HEX spells (printf is a builtin: nothing in an argv)
	h=$1
	f=""
	while [ -n "$h" ]; do
		rest=${h#??}
		f="$f\\x${h%"$rest"}"
		h=$rest
	done
	# shellcheck disable=SC2059 # the format is the data: \xHH escapes built above from checked hex
	printf "$f"
}

pads() { # pads HEX: HMAC-SHA256's key blocks (the key zero-padded to 64 bytes, XOR 0x36 and 0x5c)
	h=$1
	ih=""
	oh=""
	n=0
	while [ "$n" -lt 64 ]; do
		b=0
		if [ -n "$h" ]; then
			rest=${h#??}
			b=$((0x${h%"$rest"}))
			h=$rest
		fi
		ih=$ih$(printf '%02x' $((b ^ 0x36)))
		oh=$oh$(printf '%02x' $((b ^ 0x5c)))
		n=$((n + 1))
	done
	hex_bytes "$ih" >"$WORK/ipad" && hex_bytes "$oh" >"$WORK/opad"
	rc=$?
	ih=""
	oh=""
	return $rc
}

mac() { # mac < MESSAGE: HMAC-SHA256(key, MESSAGE) in hex = sha256(opad || sha256(ipad || MESSAGE))
	inner=$(cat "$WORK/ipad" - | sha256sum) || return 1
	outer=$({
		cat "$WORK/opad"
		hex_bytes "${inner%% *}"
	} | sha256sum) || return 1
	echo "${outer%% *}"
}

load_key() { # the key file: copied for nginx, its HMAC key turned into the pads; 1 if unusable
	kline=""
	IFS= read -r kline 2>/dev/null <"$KEY_FILE" || return 1
	case $kline in "$PROTOCOL channel-key "*) ;; *) return 1 ;; esac
	khex=${kline#"$PROTOCOL channel-key "}
	kline=""
	is_hex64 "$khex" || return 1
	grep -q -x -F -e "-----BEGIN CERTIFICATE-----" "$KEY_FILE" || return 1
	grep -q -x -F -e "-----BEGIN PRIVATE KEY-----" "$KEY_FILE" || return 1
	cp "$KEY_FILE" "$KEYDIR/channel.pem.new" && chmod 600 "$KEYDIR/channel.pem.new" &&
		mv "$KEYDIR/channel.pem.new" "$KEYDIR/channel.pem" || return 1
	pads "$khex" || return 1
	khex=""
	chmod 600 "$WORK/ipad" "$WORK/opad"
}

control_conf() { # control_conf SIZE: the agent's part of the control server, for a config of SIZE bytes
	limit=$((4 * $1))
	[ "$limit" -ge "$MIN_BODY" ] || limit=$MIN_BODY
	if [ "$keyed" = 1 ]; then
		cat <<EOF
# Written by the swarmgate agent; a pushed config cannot change it.
ssl_certificate $KEYDIR/channel.pem;
ssl_certificate_key $KEYDIR/channel.pem;
ssl_client_certificate $KEYDIR/channel.pem;
ssl_verify_client on;
ssl_protocols TLSv1.2 TLSv1.3;
access_log off;
client_max_body_size $limit;
location = /swarmgate/v3/config {
    if (\$request_method != PUT) {
        return 405;
    }
    # The body goes to nginx's temp path, then is renamed onto the inbox file (copied beside it and
    # renamed on another filesystem): the agent never sees half a push.
    dav_methods PUT;
    create_full_put_path on;
    alias $INBOX/config;
}
location = /swarmgate/v3/status {
    if (\$request_method != GET) {
        return 405;
    }
    default_type text/plain;
    alias $DIR/status;
}
location / {
    return 404;
}
EOF
	else
		cat <<EOF
# Written by the swarmgate agent: no usable channel key, so the control server completes no handshake.
ssl_reject_handshake on;
access_log off;
location / {
    return 404;
}
EOF
	fi >"$CONTROL/server.conf.new" && chmod 644 "$CONTROL/server.conf.new" &&
		mv "$CONTROL/server.conf.new" "$CONTROL/server.conf"
}

size_of() { wc -c <"$1"; }

# -- pushes and saved files ---------------------------------------------------------------------
# authentic FILE: the first line of FILE is a swarmgate/3 config header with the right MAC. Sets
# h_task h_term h_seq h_digest and h_line (the header line, without its newline).
authentic() {
	[ "$keyed" = 1 ] || return 1
	h_file=$1
	h_line=$(head -c 300 "$h_file" | head -n 1) || return 1 # a header is at most 251 bytes
	case $h_line in "$PROTOCOL config "*) ;; *) return 1 ;; esac
	old_ifs=$IFS
	IFS=' '
	set -f
	# shellcheck disable=SC2086 # split on single spaces; checked against the line just below
	set -- ${h_line#"$PROTOCOL config "}
	IFS=$old_ifs
	set +f
	[ $# -eq 5 ] && [ "$PROTOCOL config $1 $2 $3 $4 $5" = "$h_line" ] || return 1
	is_task "$1" && is_number "$2" && is_number "$3" && is_hex64 "$4" && is_hex64 "$5" || return 1
	# The line is ASCII now, so its length is its size: the file must hold exactly it, then a newline.
	[ "$(head -n 1 "$h_file" | wc -c)" -eq $((${#h_line} + 1)) ] 2>/dev/null || return 1
	h_task=$1 h_term=$2 h_seq=$3 h_digest=$4
	[ "$(printf '%s' "$PROTOCOL config $1 $2 $3 $4" | mac)" = "$5" ] # hex strings: see the header
}

text_of() { # text_of FILE OUT: the text after the header authentic() read; 1 unless its sha256 is DIGEST
	tail -c +$((${#h_line} + 2)) "$1" >"$2" || return 1
	sum=$(sha256sum <"$2") || return 1
	[ "${sum%% *}" = "$h_digest" ]
}

newer() { # newer TERM SEQ: strictly after the fence
	[ "$1" -gt "$fterm" ] || { [ "$1" -eq "$fterm" ] && [ "$2" -gt "$fseq" ]; }
}

write_status() { # write_status LINE [MESSAGE_FILE]: signed, replaced whole, so a reader never sees half
	[ "$keyed" = 1 ] || return 0 # nobody could read it, nor believe it
	{
		echo "$1"
		if [ $# -gt 1 ]; then
			head -c 2000 "$2" | tr -d '\000'
			echo
		fi
	} >"$WORK/status.body" || return 1
	m=$(mac <"$WORK/status.body") || return 1
	{
		cat "$WORK/status.body"
		echo "$PROTOCOL mac $m"
	} >"$DIR/status.new" && chmod 644 "$DIR/status.new" && mv "$DIR/status.new" "$DIR/status"
}

status_ok() { write_status "$PROTOCOL status $TASK ok $serving $fterm $fseq"; }

refuse() { # refuse WHY: not an authentic, current push for this task; nothing changes
	log "refused a push: $*"
}

reject() { # reject DIGEST WHY_FILE: the last good config stays; the status says why
	write_status "$PROTOCOL status $TASK error $1 $serving $fterm $fseq" "$2"
	log "rejected $1: $(head -n 1 "$2")"
}

# policy FILE: 0 when the config keeps to what a push may change; else 1 and why in $WORK/message.
policy() {
	include="include $CONTROL/*.conf;"
	n=$(sed 's/^[[:space:]]*//' "$1" | grep -c -x -F -e "$include")
	if [ "$n" != 1 ]; then
		echo "content policy: the config must have the line '$include' exactly once ($n found)"
		return 1
	fi
	n=$(grep -o -F -e swarmgate-control "$1" | wc -l)
	if [ "$n" != 1 ]; then
		echo "content policy: 'swarmgate-control' must occur once, as the control server's server_name ($n found)"
		return 1
	fi
	n=$(grep -o -F -e "$DIR" "$1" | wc -l)
	if [ "$n" != 1 ]; then
		echo "content policy: '$DIR' must occur once, in the control server's include ($n found)"
		return 1
	fi
	if grep -q -F -e swarmgate-channel "$1"; then
		echo "content policy: the config must not name the swarmgate-channel secret"
		return 1
	fi
	if grep -q -F -e master_process "$1"; then
		echo "content policy: the config must not set master_process"
		return 1
	fi
	# `user root;`, `user "0" group;`...: on each line, and once more with comments (from a `#` that
	# starts a word) dropped and all whitespace joined, for a directive split across lines. What slips
	# through (an include, quoting tricks) is caught after the reload, when no worker may be root.
	root_user="(^|[;{}[:space:]])user[[:space:]]+[\"']?(root|0)[\"']?([;[:space:]]|\$)"
	if grep -q -E -e "$root_user" "$1" ||
		sed -E 's/(^|[;{}[:space:]])#.*/\1/' "$1" | tr -s '\t\r\n' '   ' | grep -q -E -e "$root_user"; then
		echo "content policy: nginx workers must not run as root (user root or 0)"
		return 1
	fi
} >"$WORK/message"

check() { # check: nginx -t on the file at the live path (relative includes resolve as they will)
	"$NGINX" -t -q -c "$CONF" -g 'daemon off;' >"$WORK/message" 2>&1
}

root_workers() { # the master's children that run as uid 0 (real, effective or saved), one per line
	for p in $(workers); do
		while read -r k real eff saved _; do
			[ "$k" = Uid: ] || continue
			case " $real $eff $saved " in *" 0 "*) echo "$p" ;; esac
			break
		done 2>/dev/null </proc/"$p"/status
	done
}

workers_unprivileged() { # 0 unless a worker still runs as root 0.5 s on (a new one drops root at once)
	[ -z "$(root_workers)" ] && return 0
	pause 0.5
	[ -z "$(root_workers)" ]
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

reload() { # reload: HUP the master (`nginx -s reload` without trusting the config's pid path)
	old=$(workers)
	kill -HUP "$nginx_pid"
	# shellcheck disable=SC2086 # word splitting joins the pids onto one line
	reloaded "$(echo $old)"
}

restore() { # restore: the last good config (and its control file) back at the live path
	cp "$WORK/last-good" "$CONF"
	control_conf "$(size_of "$CONF")"
}

apply() { # apply FILE: the pushed file in FILE, read once, start to end
	if ! authentic "$1"; then
		refuse "not a $PROTOCOL config header with the channel key's MAC"
		return
	fi
	if [ "$h_task" != "$TASK" ]; then
		refuse "aimed at task $h_task"
		return
	fi
	if ! newer "$h_term" "$h_seq"; then
		refuse "term $h_term seq $h_seq is not newer than the fence (term $fterm seq $fseq)"
		return
	fi
	if ! text_of "$1" "$WORK/candidate"; then
		refuse "the text's sha256 is not the header's digest $h_digest"
		return
	fi
	# Authentic, for this task and new: the fence moves before anything else, for good.
	if ! { echo "$h_line" >"$STATE/fence.new" && mv "$STATE/fence.new" "$STATE/fence"; }; then
		refuse "cannot save the fence to $STATE: a push this agent cannot remember is not applied"
		return
	fi
	fterm=$h_term
	fseq=$h_seq
	digest=$h_digest
	if [ "$digest" = "$serving" ]; then # pushed twice (an operator restarted mid-push): say so again
		status_ok
		log "already serving $serving (term $fterm seq $fseq)"
		return
	fi
	if ! policy "$WORK/candidate"; then
		reject "$digest" "$WORK/message"
		return
	fi
	cp "$CONF" "$WORK/last-good" && cp "$WORK/candidate" "$CONF.new" && mv "$CONF.new" "$CONF" &&
		control_conf "$(size_of "$CONF")" || return
	if ! check; then
		restore
		reject "$digest" "$WORK/message"
		return
	fi
	if ! reload; then
		restore
		echo "nginx passed -t but did not start new workers within 5 s" >"$WORK/message"
		reject "$digest" "$WORK/message"
		return
	fi
	if ! workers_unprivileged; then
		restore
		reload || log "the last good config did not reload either"
		echo "content policy: a worker ran as root (uid 0) after the reload; the last good config is back" \
			>"$WORK/message"
		reject "$digest" "$WORK/message"
		return
	fi
	serving=$digest
	# Saved for the next task on this node: it starts from here, not from the bootstrap.
	cp "$1" "$STATE/config.new" && mv "$STATE/config.new" "$STATE/config" || log "cannot save to $STATE"
	status_ok
	log "serving $serving (term $fterm seq $fseq)"
}

# -- start --------------------------------------------------------------------------------------
umask 077
mkdir -p "$CONTROL" "$KEYDIR" "$WORK" "$INBOX" "$STATE" || exit 1
chmod 755 "$DIR" "$CONTROL" && chmod 700 "$KEYDIR" "$WORK" || exit 1
# nginx's workers (the config's `user`) create the pushed file; they may not list or read the inbox.
chmod 1733 "$INBOX" || exit 1
# A previous container's leftovers; nothing but the agent's own file may sit in control/.
rm -f "$INBOX/config" "$DIR/status" "$KEYDIR/channel.pem" "$WORK/ipad" "$WORK/opad" "$CONTROL"/* ||
	exit 1
if load_key; then
	keyed=1
else
	khex=""
	log "no usable channel key in $KEY_FILE: serving, but nothing can push a config"
fi

# The fence: the greater of the saved fence and the saved config's header, each only if signed.
if [ "$keyed" != 1 ]; then
	[ -s "$STATE/config" ] && log "without the channel key the saved config cannot be verified: not served"
elif [ -s "$STATE/fence" ]; then
	if authentic "$STATE/fence"; then
		fterm=$h_term
		fseq=$h_seq
	else
		log "the saved fence is not signed with the channel key: ignored"
	fi
fi

# The last config this node served, if it is signed, keeps to the policy and still passes nginx -t
# (its TLS secrets may be gone).
start_from="the bootstrap"
if [ "$keyed" = 1 ] && [ -s "$STATE/config" ]; then
	if ! authentic "$STATE/config" || ! text_of "$STATE/config" "$WORK/candidate"; then
		log "the saved config is not signed with the channel key, or its digest is wrong: never served"
	else
		if newer "$h_term" "$h_seq"; then
			fterm=$h_term
			fseq=$h_seq
		fi
		if ! policy "$WORK/candidate"; then
			log "the saved config breaks the content policy: $(head -n 1 "$WORK/message")"
		elif cp "$WORK/candidate" "$CONF" && control_conf "$(size_of "$CONF")" && check; then
			serving=$h_digest
			start_from="saved config $serving"
		fi
	fi
fi
if [ "$serving" = - ]; then
	cp "$BOOTSTRAP" "$CONF" && control_conf "$(size_of "$CONF")" || exit 1
	if [ "$keyed" = 1 ] && ! check; then
		# The bootstrap is the image's: if it fails with the channel's TLS, the key's certificate or
		# private key is what nginx cannot use. Serve without a control server rather than not at all.
		log "the bootstrap fails nginx -t with the channel key: $(head -n 1 "$WORK/message")"
		log "serving, but nothing can push a config"
		keyed=0
		control_conf "$(size_of "$CONF")" || exit 1
	fi
fi
status_ok
"$NGINX" -c "$CONF" -g 'daemon off;' &
nginx_pid=$!
log "nginx started (pid $nginx_pid) from $start_from, fence term $fterm seq $fseq"

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
