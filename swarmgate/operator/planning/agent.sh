#!/bin/sh
# swarmgate proxy agent: PID 1 of a proxy task. It runs nginx and applies the configs the operator
# pushes into it, in place (nginx -t, then a graceful reload of the same master). It never talks to
# the operator: the operator PUTs configs through nginx's own control server and GETs the status
# file this agent writes. So a proxy task starts, serves and keeps serving whether the operator is
# up or not, wherever it runs. Needs only a POSIX shell with busybox's applets and nginx.
#
# Environment (set by the operator on the proxy service; none of it depends on the operator):
#   SWARMGATE_TASK_ID         this task's ID ({{.Task.ID}}); pushes name it, so does every status (required)
#   SWARMGATE_KEY_FILE        the channel key secret, the bootstrap key K0 [/run/secrets/swarmgate-channel]
#   SWARMGATE_CONFIG_PATH     the live nginx config      [/etc/nginx/nginx.conf]
#   SWARMGATE_BOOTSTRAP_PATH  served when no verified saved config passes nginx -t
#                             [/swarmgate/bootstrap.conf]
#   SWARMGATE_DIR             the agent's directory; the rendered configs name it  [/var/lib/swarmgate]
#   SWARMGATE_STATE_DIR       last config served, the fence and the current key, kept across tasks on this
#                             node (a named volume) [$SWARMGATE_DIR/state]
#   SWARMGATE_NGINX           nginx binary               [nginx]
#   SWARMGATE_PEER_GRACE      seconds without a listed peer on the control server before the dead-man
#                             rule admits key holders it refused by address (below) [60]
#   SWARMGATE_CERTS_DIR       the certificate courier's files, `<secret ID>.pem` (a read-only volume)
#                             [/run/swarmgate-certs]
#   SWARMGATE_CERT_WAIT       seconds a push may wait for the courier's files it names (below) [120]
#   SWARMGATE_PEERS_FILE      LuaBalancer's peers, for a change of peers only (below) [/var/run/swarmgate-peers]
#   SWARMGATE_TRAFFIC_DIR     where nginx writes the per-route traffic log the agent counts (below); the
#                             rendered configs name it [/var/run/swarmgate-traffic]
#   SWARMGATE_TRAFFIC_TICK    seconds between two rotations of that log [2]
#
# Protocol swarmgate/3. The key file (one Swarm secret) is `swarmgate/3 channel-key HMACHEX` and then
# a self-signed certificate and its private key (PEM; nginx skips the first line). The control server
# answers only on the TLS listener, only to SNI/Host swarmgate-control.invalid, and only to a client
# presenting that same certificate; the operator pins it as the server's. Every push and every status
# carries an HMAC-SHA256 with the key's HMACHEX. "The key" is the current key Kc: the mounted secret
# (the bootstrap key K0, generation 0) until a rekey (below) replaces it with a newer generation. Files:
#   $DIR/key/channel.pem      the agent's copy of the current key file (dir 0700, file 0600, root): the
#                             control server's certificate, key and only client CA. Read by the nginx master.
#   $DIR/control/server.conf  everything inside the control server but its listen and name: TLS, client
#                             verification, the address filter (allow/deny), the access log, body
#                             limit, locations. Written by the agent only; the pushed config includes
#                             it (`include $DIR/control/*.conf;`) and may not change it. Without a
#                             usable key: `ssl_reject_handshake on`, nothing else.
#   $DIR/control/access.log   the control server's access log (nginx's combined format), read and
#                             emptied by the agent every 2 s for the dead-man rule (below).
#   $DIR/inbox/config         where nginx puts a PUT (renamed into place whole). First line
#                             `swarmgate/3 config TASK TERM SEQ DIGEST MAC`, then the config text.
#                             MAC = HMAC(key, that line before ` MAC`); DIGEST = sha256 hex of the text.
#   $DIR/inbox/key            a rekey, PUT the same way: `swarmgate/3 key TASK GEN SUM MAC0 MAC`, then a
#                             new key file. SUM = its sha256; MAC0 = HMAC(K0, `swarmgate/3 key-origin GEN
#                             SUM`); MAC = HMAC(Kc, that line before ` MAC`).
#   $DIR/status               `swarmgate/3 status TASK ok SERVED TERM SEQ`, or `swarmgate/3 status TASK
#                             error REJECTED SERVED TERM SEQ` followed by why (at most 2000 bytes), then
#                             `swarmgate/3 mac HEX` = HMAC(key, every byte before that line). SERVED is
#                             `-` for the bootstrap; TERM SEQ is the fence (`0 0`: none accepted yet).
#                             `$DIR/status-gN` under key generation N > 0: one file per generation, so
#                             a connection reads a status signed with the key whose certificate it saw.
#   $DIR/work/                private scratch (0700): the HMAC keys' inner and outer pads (Kc's, K0's
#                             with suffix 0) among others.
#   $STATE/config             the last config this node served: the whole signed body as pushed (after a
#                             rekey: signed again by the agent with the new key, term 0 seq 0).
#   $STATE/fence              the signed header line of the newest authentic push accepted here.
#   $STATE/key                the last rekey accepted here, as PUT (0600, root): the current key.
#   $DIR/traffic              the per-route traffic counters, served at GET /swarmgate/v3/traffic (0644,
#                             replaced whole): `swarmgate/3 traffic TASK EPOCH UPTIME`, then sorted lines
#                             `c KEY UPSTREAM CLASS REQUESTS BYTES_SENT BYTES_RECEIVED` and
#                             `h KEY UPSTREAM KIND B0..B11 SUM` (KIND `request` or `upstream`; B0..B11 count
#                             the times up to 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf s, not
#                             cumulatively; SUM in seconds). Cumulative within EPOCH (the agent's start and
#                             pid): a new task starts from zero. Not signed: only a key holder reads it.
#   $TRAFFIC/traffic.log      written by nginx (TrafficMetrics), renamed to $TRAFFIC/batch.N and counted
#                             by the aggregator into $WORK/traffic.state (see "Traffic" below).
#   $PEERS_FILE               (LuaBalancer) the peers of a config applied without a reload: /proc/uptime
#                             when written, then its lines between the peers markers (0644: workers read it).
#
# A change of peers only (LuaBalancer): when a config differs from the one served only between the
# lines `# swarmgate peers: begin` and `end` (a scale, a roll, a task restarted), and both run
# swarmgate's balancer, the agent runs nginx -t, installs it and writes $PEERS_FILE, and does not
# signal nginx: every worker started before that file reads it within 0.5 s (balancer.lua); a worker
# started later (a reload, a restart) has the same peers in its own config.
#
# Traffic: a child of the agent (the aggregator, restarted within 0.2 s if it dies) counts the traffic
# log nginx writes, every SWARMGATE_TRAFFIC_TICK s: a request is in the served file within about
# 1 s (nginx's buffer) + 2 ticks (rename, then count), 5 s by default. Every request any worker served
# is counted once, the old workers' after a reload included (they reopen the log on the same USR1).
# A regular file, not a pipe: nothing blocks nginx, `nginx -t` or a reload when the aggregator is
# dead or stuck; the log then grows until it is counted, and nothing is lost. What a restart of the
# agent (a new task) loses: the counters, which start over in a new EPOCH.
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
# include, nor the swarmgate-channel secret, and carries Lua only as swarmgate's balancer (lua_policy).
# Nor may it turn what the proxy writes (PUT bodies, logs, temp files) into code its root master loads
# (directives_policy, reading the config as nginx does): `include` names only the control file and
# /etc/nginx/modules-enabled/*.conf, `load_module` only /usr/{lib,share}/nginx/modules/NAME.so; no Perl,
# njs, `ssl_engine` or `engine:` key, `env` sets nothing; logs, pid and lock files only under /var/log,
# /var/cache, /tmp or /run (or stdout, stderr, syslog), temp and cache directories under /var/cache or
# /tmp, none in this directory, $STATE, $CERTS or $PEERS_FILE; nothing stores request bodies.
# So a push changes routes, never the channel, and runs no code but nginx's own.
# Certificates: a config names its TLS files as `$CERTS/<secret ID>.pem`, which the certificate courier
# (another service, on the same node) copies from Swarm secrets; the operator updates the courier and
# pushes the config in the same pass. So, before `nginx -t`, a push waits until every such file it names
# exists: the old config keeps serving, the status says `swarmgate/3 status TASK waiting PENDING SERVED
# TERM SEQ` and `waiting: N certificate files` (not a rejection), and the files are looked for every
# 0.5 s. After SWARMGATE_CERT_WAIT s the push is rejected, each missing file named on a line of its own
# (`certificate file not delivered: PATH`: an ID, never content). A newer push replaces a waiting one;
# the same digest pushed again keeps waiting on the first one's clock.
# Peers: a config may name who may use its control server, in one line `# swarmgate channel peers: NET...`
# (the operator lists the Swarm's nodes and its ControlSources). It is part of the policy: more than one
# such line, the phrase anywhere else, a line without networks, or any token that is not strictly an IPv4
# `a.b.c.d/0-32` or IPv6 `x:y::z/0-128` network, and the config is rejected. The agent writes the list
# into its control file as `allow NET;` and `deny all;` (before nginx -t of that config, restored with
# the old list whenever the config is not served), so a client that completed the mutual-TLS handshake
# with the channel's certificate still gets 403 from any other address. No line (the bootstrap), no
# filter: any key holder, as before. Why: defence in depth. The key is the real barrier; the list keeps a
# leaked key from being usable from anywhere, and the config text carrying it is covered by the signed
# digest, so only a key holder's push can change it.
# Dead-man rule: a list can be wrong (a new manager the proxies' config does not list yet, an operator
# outside the Swarm without ControlSources), and the only way to fix it is a push through the very
# server it closes. So the agent reads the control server's access log: a 2xx means a listed peer uses
# the channel; a 403 means a client that presented the channel's certificate (without it nginx closes the connection (444)
# before it looks at addresses) was refused by address. When no 2xx came for SWARMGATE_PEER_GRACE
# seconds (counted from the agent's start, the last 2xx or the last applied config) and such clients did
# meanwhile, the agent adds their addresses (/32 or /128) to the filter, reloads nginx and logs it loudly.
# At most 16 addresses, held in memory only: the next applied config's list replaces them (logged), and
# a restart starts from the pushed list again. The log is nginx's record of network input: only its
# first field ($remote_addr) is used, only if it is strictly an IPv4 or IPv6 address. A bounded fallback
# rather than a lockout: while the operator reads its statuses (every few seconds) nobody is admitted.
# Key rotation: a rekey is taken only if, in this order: its header parses; its MAC is the current key's;
# it names this task; GEN is greater than the current generation; the key's sha256 is SUM; it is a key
# file; MAC0 verifies with K0. There is no term/seq fence for rekeys: GEN orders them, and a rekey
# signed with an earlier key fails its MAC. Then the new key is installed, nginx -t, reload (the control
# server presents the new certificate: that is how the operator learns the generation; the status
# format does not change), and saved in $STATE/key; if nginx refuses it, the old key stays, whole. The
# fence starts over at `0 0`: it belongs to a key, and a leaked old key's huge term must not lock the
# operator out. At start the current key is $STATE/key's if its SUM, key file and MAC0 verify (with K0:
# it may come from an earlier task on this node), else K0 (logged); saved config and fence are then
# checked with it. Refused rekeys are logged and change nothing.
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
GRACE=${SWARMGATE_PEER_GRACE:-60}
CERTS=${SWARMGATE_CERTS_DIR:-/run/swarmgate-certs}
CERT_WAIT=${SWARMGATE_CERT_WAIT:-120}
PROTOCOL=swarmgate/3
INBOX=$DIR/inbox
WORK=$DIR/work
KEYDIR=$DIR/key
CONTROL=$DIR/control
MIN_BODY=33554432 # 32 MiB: the smallest push size limit (it grows with the config served)
ADMIT_CAP=16      # the dead-man rule admits at most this many addresses beyond the pushed peers
PEERS_MARK="# swarmgate channel peers: "
# LuaBalancer: the one piece of Lua a config may carry, between these marker lines, by its sha256 (its
# init_by_lua runs in nginx's master, as root); tests/unit/test_lua_balancer.py keeps it the renderer's.
LUA_BEGIN="    # swarmgate lua: begin"
LUA_END="    # swarmgate lua: end"
LUA_SHA256=c92e62fd76b58d470875bf5690f33ca624b89dea4121ec5ddf3324f670512f06
LUA_BALANCER_LINE='        balancer_by_lua_block { require("swarmgate_balancer").balance() }'
# A change of the pools' peers only (the lines between these markers) is applied without a reload: the
# balancer's workers read the new lines from PEERS_FILE (see balancer.lua), stamped with /proc/uptime.
PEERS_BEGIN="    # swarmgate peers: begin"
PEERS_END="    # swarmgate peers: end"
PEERS_FILE=${SWARMGATE_PEERS_FILE:-/var/run/swarmgate-peers}
# Per-route traffic (below): nginx's traffic log, the aggregator's tick, and the fastest awk at hand
# (mawk needs a quarter of the CPU busybox's awk takes: docs/benchmarks/data-plane.md).
TRAFFIC=${SWARMGATE_TRAFFIC_DIR:-/var/run/swarmgate-traffic}
TRAFFIC_TICK=${SWARMGATE_TRAFFIC_TICK:-2}
AWK=awk
for a in mawk gawk; do
	if command -v "$a" >/dev/null 2>&1; then
		AWK=$a
		break
	fi
done

log() { echo "swarmgate-agent: $*" >&2; }
pause() { sleep "$1" & wait $!; } # a trapped signal ends the wait at once
nginx_alive() { kill -0 "$nginx_pid" 2>/dev/null; }

# The agent's whole state: `phase` (starting -> serving -> stopping), `serving` (the digest nginx
# serves now, `-` for the bootstrap), `keyed` (1 when the channel key is loaded), `kgen` (the current
# key's generation, 0 for the bootstrap key), `STATUS` (the status file of that generation), the fence
# `fterm fseq` (the newest push accepted) and `rejected` (the digest the status reports as rejected,
# empty when it says ok; why in $WORK/why). Everything else is local to one step.
phase=starting
serving=-
keyed=0
kgen=0
STATUS=$DIR/status
fterm=0
fseq=0
rejected=""
nginx_pid=""
# The traffic aggregator: its pid, how many were started, and this agent's epoch of counters.
traffic_pid=""
t_gens=0
EPOCH=""
# A push waiting for the courier's files: its digest (empty: none), when it began to wait (uptime s);
# its config and signed body are $WORK/pending.conf and $WORK/pending.push.
pending=""
pending_since=0
# The control server's address filter: `peers` (the served config's peers list, networks separated by
# spaces; empty: no filter), `admitted` (addresses the dead-man rule let in since, `a.b.c.d/32` or
# `x::y/128`), and the dead-man rule's clock: `last_ok` (/proc/uptime seconds of the agent's start or
# the last 2xx the control server answered), `heard` (addresses refused with 403 since then) and
# `next_watch` (when to read the access log again).
peers=""
admitted=""
heard=""
last_ok=0
next_watch=0
cap_told=0

stop() {
	phase=stopping
	# Before its workers exist nginx may not have installed its handlers yet, and a signal then kills
	# it outright; the start-up wait sends the QUIT once nginx is ready.
	[ -n "$traffic_pid" ] && kill "$traffic_pid" 2>/dev/null
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

pads() { # pads HEX [SUFFIX]: HMAC-SHA256's key blocks (the key zero-padded to 64 bytes, XOR 0x36 and
	# 0x5c) in $WORK/ipadSUFFIX and $WORK/opadSUFFIX: `` the current key's, `0` the bootstrap key's.
	h=$1
	psuf=${2:-}
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
	hex_bytes "$ih" >"$WORK/ipad$psuf" && hex_bytes "$oh" >"$WORK/opad$psuf" &&
		chmod 600 "$WORK/ipad$psuf" "$WORK/opad$psuf"
	rc=$?
	ih=""
	oh=""
	return $rc
}

mac() { # mac [SUFFIX] < MESSAGE: HMAC-SHA256(key, MESSAGE) in hex = sha256(opad || sha256(ipad || MESSAGE)),
	# with the pads pads() wrote under SUFFIX (none: the current key, `0`: the bootstrap key)
	inner=$(cat "$WORK/ipad${1:-}" - | sha256sum) || return 1
	outer=$({
		cat "$WORK/opad${1:-}"
		hex_bytes "${inner%% *}"
	} | sha256sum) || return 1
	echo "${outer%% *}"
}

key_file_ok() { # key_file_ok FILE: FILE is a channel key file; sets khex (its HMAC key, hex)
	khex=""
	kline=""
	IFS= read -r kline 2>/dev/null <"$1" || return 1
	case $kline in "$PROTOCOL channel-key "*) ;; *) return 1 ;; esac
	khex=${kline#"$PROTOCOL channel-key "}
	kline=""
	is_hex64 "$khex" || return 1
	grep -q -x -F -e "-----BEGIN CERTIFICATE-----" "$1" || return 1
	grep -q -x -F -e "-----BEGIN PRIVATE KEY-----" "$1"
}

install_key() { # install_key FILE: FILE (checked by key_file_ok, which set khex) becomes the current key
	cp "$1" "$KEYDIR/channel.pem.new" && chmod 600 "$KEYDIR/channel.pem.new" &&
		mv "$KEYDIR/channel.pem.new" "$KEYDIR/channel.pem" || return 1
	pads "$khex"
}

load_key() { # the bootstrap key K0: its pads (suffix 0), to check key generations against; 1 if unusable
	key_file_ok "$KEY_FILE" || return 1
	pads "$khex" 0
}

# header_fields KIND FILE MAX: the first line of FILE is `swarmgate/3 KIND` and five fields, each
# after one space, alone on its line (at most MAX bytes). Sets f_line (the line, without its
# newline) and f1..f5; the caller checks what each field must be. 1 if it is no such line.
header_fields() {
	f_line=$(head -c "$3" "$2" | head -n 1) || return 1
	case $f_line in "$PROTOCOL $1 "*) ;; *) return 1 ;; esac
	old_ifs=$IFS
	IFS=' '
	set -f
	# shellcheck disable=SC2086 # split on single spaces; checked against the line just below
	set -- "$1" "$2" ${f_line#"$PROTOCOL $1 "}
	IFS=$old_ifs
	set +f
	[ $# -eq 7 ] && [ "$PROTOCOL $1 $3 $4 $5 $6 $7" = "$f_line" ] || return 1
	# The line is ASCII once its fields pass their checks, so its length is its size: the file must
	# hold exactly it, then a newline (the callers check the fields before they trust this).
	[ "$(head -n 1 "$2" | wc -c)" -eq $((${#f_line} + 1)) ] 2>/dev/null || return 1
	f1=$3 f2=$4 f3=$5 f4=$6 f5=$7
}

# key_header FILE: the first line of FILE is `swarmgate/3 key TASK GEN SUM MAC0 MAC`, alone on its line.
# Sets k_task k_gen k_sum k_mac0 k_mac and k_line. Checks no MAC.
key_header() {
	header_fields key "$1" 400 || return 1 # a header is at most 294 bytes
	is_task "$f1" && is_number "$f2" && is_hex64 "$f3" && is_hex64 "$f4" && is_hex64 "$f5" || return 1
	k_line=$f_line k_task=$f1 k_gen=$f2 k_sum=$f3 k_mac0=$f4 k_mac=$f5
}

# key_origin FILE OUT: the key FILE carries (after the header key_header read) into OUT, if it is a
# generation of the bootstrap key: its sha256 is SUM, it is a key file, and MAC0 = HMAC(K0, `swarmgate/3
# key-origin GEN SUM`). Sets khex; on failure, why in k_why. Needs K0's pads (load_key).
key_origin() {
	k_why=""
	if [ "$k_gen" = 0 ]; then
		k_why="generation 0 is the bootstrap key's"
		return 1
	fi
	tail -c +$((${#k_line} + 2)) "$1" >"$2" || return 1
	sum=$(sha256sum <"$2") || return 1
	if [ "${sum%% *}" != "$k_sum" ]; then
		k_why="the key's sha256 is not the header's $k_sum"
		return 1
	fi
	if ! key_file_ok "$2"; then
		khex=""
		k_why="the text is not a channel key file"
		return 1
	fi
	if [ "$(printf '%s' "$PROTOCOL key-origin $k_gen $k_sum" | mac 0)" != "$k_mac0" ]; then
		khex=""
		k_why="its origin MAC does not verify with the bootstrap key"
		return 1
	fi
}

# -- the control server's peers ------------------------------------------------------------------
# Strict forms only: what reaches the control file as `allow` is digits, dots, hex digits, colons and
# one slash, nothing an nginx config could read as anything but an address.
is_dec() { # is_dec N MAX: decimal 0 to MAX (at most 3 digits), no sign, no leading zero but `0` itself
	case $1 in 0 | [1-9] | [1-9][0-9] | [1-9][0-9][0-9]) ;; *) return 1 ;; esac
	[ "$1" -le "$2" ]
}

is_ipv4() { # is_ipv4 ADDR: four decimal octets 0-255 (no leading zeros: `010` is octal to some parsers)
	case $1 in "" | *[!0-9.]* | .* | *. | *..*) return 1 ;; esac
	v4_ifs=$IFS
	IFS=.
	# shellcheck disable=SC2086 # split on the dots; digits and dots only, checked above
	set -- $1
	IFS=$v4_ifs
	[ $# -eq 4 ] && is_dec "$1" 255 && is_dec "$2" 255 && is_dec "$3" 255 && is_dec "$4" 255
}

is_ipv6() { # is_ipv6 ADDR: hex groups of 1 to 4 digits joined by colons, eight of them or at most seven
	# around one `::`; at most 39 characters (no embedded IPv4, no zone)
	case $1 in "" | *[!0-9A-Fa-f:]* | *:::* | *::*::*) return 1 ;; esac
	[ ${#1} -le 39 ] || return 1
	case $1 in
	*::*) v6_parts="${1%%::*} ${1#*::}" ;;
	*) v6_parts=$1 ;;
	esac
	v6_n=0
	for v6_part in $v6_parts; do # each side of `::` (an empty side is no word)
		case $v6_part in :* | *:) return 1 ;; esac
		v6_ifs=$IFS
		IFS=:
		for v6_group in $v6_part; do
			[ -n "$v6_group" ] && [ ${#v6_group} -le 4 ] || { IFS=$v6_ifs; return 1; }
			v6_n=$((v6_n + 1))
		done
		IFS=$v6_ifs
	done
	case $1 in
	*::*) [ "$v6_n" -le 7 ] ;;
	*) [ "$v6_n" -eq 8 ] ;;
	esac
}

is_network() { # is_network TOKEN: an IPv4 `a.b.c.d/0-32` or IPv6 `x:y::z/0-128` network, strictly
	case $1 in */*) ;; *) return 1 ;; esac
	if is_ipv4 "${1%/*}"; then
		is_dec "${1##*/}" 32
	else
		is_ipv6 "${1%/*}" && is_dec "${1##*/}" 128
	fi
}

ip_of() { # ip_of ADDR: ADDR (a $remote_addr from the access log) as `a.b.c.d/32` or `x::y/128` in `ip`
	ip=""
	ip_a=$1
	[ ${#ip_a} -le 45 ] || return 1
	case $ip_a in ::ffff:*.*) ip_a=${ip_a#::ffff:} ;; esac # IPv4 on a dual-stack socket; nginx matches it
	if is_ipv4 "$ip_a"; then
		ip=$ip_a/32
	elif is_ipv6 "$ip_a"; then
		ip=$ip_a/128
	else
		return 1
	fi
}

# peers_of FILE: the peers line of the config in FILE, at most one, every token a network: the list in
# `p_peers` (empty without a line). Else 1 and why on stdout.
peers_of() {
	p_peers=""
	p_all=$(grep -c -F -e "swarmgate channel peers" "$1")
	p_lines=$(grep -c -E -e "^[[:space:]]*$PEERS_MARK" "$1")
	if [ "$p_lines" -gt 1 ]; then
		echo "content policy: the config may name the control server's peers once" \
			"($p_lines '$PEERS_MARK' lines found)"
		return 1
	fi
	if [ "$p_all" != "$p_lines" ]; then
		echo "content policy: 'swarmgate channel peers' may only appear as a line '$PEERS_MARK' and the peers"
		return 1
	fi
	[ "$p_lines" = 1 ] || return 0
	p_line=$(grep -E -e "^[[:space:]]*$PEERS_MARK" "$1")
	p_ifs=$IFS
	IFS=' ' # split on spaces only: a tab or a CR stays in a token, which is then bad
	set -f
	for p_token in ${p_line#*"$PEERS_MARK"}; do
		if ! is_network "$p_token"; then
			set +f
			IFS=$p_ifs
			p_peers=""
			echo "content policy: the peers line has a bad token '$(printf '%s' "$p_token" | head -c 64)'" \
				"(each must be an IPv4 a.b.c.d/0-32 or IPv6 x:y::z/0-128 network)"
			return 1
		fi
		p_peers="$p_peers $p_token"
	done
	set +f
	IFS=$p_ifs
	p_peers=${p_peers# }
	if [ -z "$p_peers" ]; then
		echo "content policy: the peers line names no network"
		return 1
	fi
}

access_rules() { # the control server's address filter: the peers, the admitted, nobody else
	[ -n "$peers" ] || return 0
	echo "# Who may use this server: the pushed config's peers, then the addresses the dead-man rule"
	echo "# admitted; 403 for everyone else, key or not."
	for a in $peers; do echo "allow $a;"; done
	for a in $admitted; do echo "allow $a; # admitted: refused while no listed peer used the channel"; done
	echo "deny all;"
}

status_path() { # status_path GEN: the status file served to connections made with generation GEN
	if [ "$1" = 0 ]; then echo "$DIR/status"; else echo "$DIR/status-g$1"; fi
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
# Asked for, checked against the channel's own certificate, and required just below: a client that
# does not present it gets no answer at all (444 closes the connection before a body is read), so
# nothing is read from it and nothing is said to it, not even why.
ssl_verify_client optional_no_ca;
ssl_protocols TLSv1.2 TLSv1.3;
if (\$ssl_client_verify != SUCCESS) {
    return 444;
}
$(access_rules)
# Read and emptied by the agent every 2 s: the dead-man rule (2xx: a peer uses the channel; 403: a
# key holder refused by address).
access_log $CONTROL/access.log;
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
location = /swarmgate/v3/key {
    if (\$request_method != PUT) {
        return 405;
    }
    dav_methods PUT;
    create_full_put_path on;
    alias $INBOX/key;
}
location = /swarmgate/v3/status {
    if (\$request_method != GET) {
        return 405;
    }
    default_type text/plain;
    alias $STATUS;
}
location = /swarmgate/v3/traffic {
    if (\$request_method != GET) {
        return 405;
    }
    default_type text/plain;
    alias $DIR/traffic;
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
	header_fields config "$1" 300 || return 1 # a header is at most 251 bytes
	is_task "$f1" && is_number "$f2" && is_number "$f3" && is_hex64 "$f4" && is_hex64 "$f5" || return 1
	h_line=$f_line h_task=$f1 h_term=$f2 h_seq=$f3 h_digest=$f4
	[ "$(printf '%s' "$PROTOCOL config $f1 $f2 $f3 $f4" | mac)" = "$f5" ] # hex strings: see the header
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
	} >"$STATUS.new" && chmod 644 "$STATUS.new" && mv "$STATUS.new" "$STATUS"
}

status_ok() {
	rejected=""
	write_status "$PROTOCOL status $TASK ok $serving $fterm $fseq"
}

status_waiting() { # status_waiting N: the pending push waits for N of the courier's files
	rejected=""
	echo "waiting: $1 certificate files" >"$WORK/waiting"
	write_status "$PROTOCOL status $TASK waiting $pending $serving $fterm $fseq" "$WORK/waiting"
}

status_again() { # status_again: the status as it stands (after a rekey: the new fence, the new key's MAC)
	if [ -n "$pending" ]; then
		write_status "$PROTOCOL status $TASK waiting $pending $serving $fterm $fseq" "$WORK/waiting"
	elif [ -z "$rejected" ]; then
		status_ok
	else
		write_status "$PROTOCOL status $TASK error $rejected $serving $fterm $fseq" "$WORK/why"
	fi
}

refuse() { # refuse WHY: not an authentic, current push for this task; nothing changes
	log "refused a push: $*"
}

reject() { # reject DIGEST WHY_FILE: the last good config stays; the status says why
	rejected=$1
	cp "$2" "$WORK/why"
	write_status "$PROTOCOL status $TASK error $1 $serving $fterm $fseq" "$WORK/why"
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
	lua_policy "$1" || return 1
	if tr -d '\000' <"$1" | cmp -s - "$1"; then :; else
		echo "content policy: the config has a NUL byte"
		return 1
	fi
	if [ -z "${SWARMGATE_POLICY_CHECK:-}" ] && [ "$serving" != - ] && peers_only "$1"; then
		# Only the peers differ from the config served, which kept to this policy when this agent
		# admitted it: read that part alone (at 10,000 pools: 1.0 s instead of 2.8 s on the whole
		# config). With nothing admitted yet (the check mode, the start, the bootstrap), every line.
		sed -n "/^$PEERS_BEGIN\$/,/^$PEERS_END\$/p" "$1" >"$WORK/peers.part" &&
			directives_policy "$WORK/peers.part" || return 1
	else
		directives_policy "$1" || return 1
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
	peers_of "$1" # sets p_peers: the control server's address filter this config asks for
} >"$WORK/message"

# lua_policy FILE: Lua only as the admitted balancer: its section (if any) is the known code, and no
# other word of the config (split at blanks, quotes and ;{}) outside whole-line comments is one of
# lua-nginx-module's directives, but in the one balancer line. Host and pool names can never be one.
LUA_DIRECTIVE='lua_[a-z_]+|(init|init_worker|exit_worker|set|content|rewrite|server_rewrite|access|header_filter|body_filter|log|balancer|ssl_certificate|ssl_client_hello|ssl_session_fetch|ssl_session_store)_by_lua[a-z_]*'
lua_policy() {
	grep -q -F -e _lua "$1" || grep -q -F -e lua_ "$1" || return 0
	sum=$(sed -n "/^$LUA_BEGIN\$/,/^$LUA_END\$/p" "$1" | sha256sum) || return 1
	if [ "${sum%% *}" != "$LUA_SHA256" ] && grep -q -x -F -e "$LUA_BEGIN" "$1"; then
		echo "content policy: the Lua between '$LUA_BEGIN' and '$LUA_END' is not swarmgate's balancer"
		return 1
	fi
	if sed "/^$LUA_BEGIN\$/,/^$LUA_END\$/d" "$1" | grep -v -x -F -e "$LUA_BALANCER_LINE" |
		grep -v -E -e '^[[:space:]]*#' | tr -s " \t;{}\"'" '\n' | grep -q -x -E -e "$LUA_DIRECTIVE"; then
		echo "content policy: Lua is admitted only as swarmgate's balancer (LuaBalancer)"
		return 1
	fi
}

# directives_policy FILE: what nginx's master (root) would load as code, and where nginx would write,
# read as nginx reads a config (ngx_conf_read_token: quotes with backslash escapes, `${`, `#` comments
# that start a word, `;` `{` `}`), statement by statement; swarmgate's Lua section and balancer line
# (lua_policy checked them) are skipped whole. A push may not turn a file the proxy writes (a PUT in
# the inbox, a log, a temp or stored body, the peers file, the courier's files) into config or code:
# * `include` only the control file and `/etc/nginx/modules-enabled/*.conf` (nginx's own image files);
#   inside `map`, `geo`, `types`... only `include` is a directive, everything else is a key.
# * `load_module` only /usr/lib/nginx/modules/NAME.so or /usr/share/nginx/modules/NAME.so; no Lua, Perl
#   or njs directive (lua_policy admits the balancer), no `ssl_engine`, no `engine:`/`store:` key (OpenSSL
#   loads a shared object for them), `env` passes a variable through and sets none.
# * what nginx writes (its master creates log, pid and lock files as root, and makes temp and cache
#   directories its workers'): logs to /dev/stdout, /dev/stderr, syslog or a file under /var/log,
#   /var/cache, /tmp or /run; pid and lock files there too; temp, cache and working directories under
#   /var/cache or /tmp; never this agent's directory, its state, the courier's files or the peers file;
#   absolute, without `.`, `..`, `//` or a variable; unix sockets under /run or /tmp (a socket left
#   where a glob includes would break every later config). No directive that stores request bodies
#   (`proxy_store`, `dav_methods`, `client_body_in_file_only`...) but `off`.
# Where nginx's reading would fail (an unbalanced quote or brace...), the config is refused here: this
# reading must never lag behind nginx's. Busybox awk reads a 4 MB config (10,000 routes) in about 3 s.
directives_policy() {
	awk -v control="$CONTROL/*.conf" -v modules="/etc/nginx/modules-enabled/*.conf" -v dir="$DIR" \
		-v state="$STATE" -v certs="$CERTS" -v peers="$PEERS_FILE" -v lua_begin="$LUA_BEGIN" \
		-v lua_end="$LUA_END" -v lua_line="$LUA_BALANCER_LINE" -f /dev/stdin "$1" <<'EOF'
function fail(why) { gsub(/[^ -~]/, "?", why); print "content policy: " why " (line " NR ")"; bad = 1; exit 1 }
function short(s) { return length(s) > 64 ? substr(s, 1, 64) "..." : s }
function under(p, root) { return p == root || index(p, root "/") == 1 }
function run(p) { return index(p "/", "/var/run/") == 1 ? substr(p, 5) : p } # /var/run is /run
function own(p) { p = run(p); return under(p, run(dir)) || under(p, run(state)) || under(p, run(certs)) || under(p, run(peers)) }
function writable(p, roots,   k, r, i) {
	if (p !~ /^\/[A-Za-z0-9_.\/-]+$/ || p ~ /\/\// || p ~ /\/\.\.?(\/|$)/ || own(p)) return 0
	k = split(roots, r, " ")
	for (i = 1; i <= k; i++) if (index(p, r[i]) == 1 && length(p) > length(r[i])) return 1
	return 0
}
function word() { n++; w[n] = cur; cur = ""; inword = 0 }
function statement(block,   name, a, i, kv) {
	name = w[1]; a = w[2]
	kv = depth > 0 && blk[depth] ~ /^(map|geo|split_clients|types|charset_map|match)$/
	if (name == "include") {
		if (n != 2 || (a != control && a != modules))
			fail("include names only '" control "' and '" modules "', not '" short(a) "'")
	} else if (kv) {
		if (block) fail("a block inside '" blk[depth] "'")
	} else if (name == "load_module") {
		if (a !~ /^\/usr\/(lib|share)\/nginx\/modules\/[A-Za-z0-9_][A-Za-z0-9_.-]*\.so$/)
			fail("load_module loads only /usr/lib/nginx/modules/NAME.so or /usr/share/nginx/modules/NAME.so, not '" short(a) "'")
	} else if (name ~ /^(lua_[a-z_]+|[a-z_]+_by_lua[a-z_]*)$/) {
		fail("Lua is admitted only as swarmgate's balancer (LuaBalancer)")
	} else if (name ~ /^(perl|perl_[a-z_]+|js_[a-z_]+|ssl_engine)$/) {
		fail("'" name "' loads code into nginx")
	} else if (name == "env" && index(a, "=")) {
		fail("env may pass a variable through, not set one: '" short(a) "'")
	} else if (name ~ /^(access_log|error_log|pid|lock_file|google_perftools_profiles)$/) {
		if (!(name == "access_log" && a == "off") && a != "/dev/stdout" && a != "/dev/stderr" &&
		    !(name == "error_log" && (a == "stderr" || a ~ /^memory:/)) && !(name ~ /_log$/ && a ~ /^syslog:/) &&
		    !writable(a, "/var/log/ /var/cache/ /tmp/ /run/ /var/run/"))
			fail(name " writes only under /var/log, /var/cache, /tmp or /run, and not to the agent's or the courier's files, nor the peers file: '" short(a) "'")
	} else if (name ~ /_(temp|cache)_path$/ || name == "working_directory") {
		if (!writable(a, "/var/cache/ /tmp/"))
			fail(name " must be a directory under /var/cache or /tmp (nginx's master makes it its workers'), not '" short(a) "'")
	} else if (name ~ /^((proxy|fastcgi|uwsgi|scgi)_store|dav_methods|client_body_in_file_only)$/) {
		if (n != 2 || a != "off") fail("'" name "' writes request bodies to files: only 'off'")
	} else if (name == "listen" && index(a, "unix:") == 1) {
		if (!writable(substr(a, 6), "/var/run/ /run/ /tmp/"))
			fail("a unix socket nginx listens on is made under /run or /tmp only, not '" short(a) "'")
	} else if (name ~ /certificate(_key)?$/) {
		for (i = 2; i <= n; i++) if (w[i] ~ /^(engine|store):/) fail("'" name "' may not load an OpenSSL engine or store")
	}
	if (block) blk[++depth] = name
	n = 0
}
BEGIN {
	sq = sprintf("%c", 39); dq = "\""
	slow = "[\"" sq "#\\\\]"
	dqre = "^([^\"\\\\]|\\\\.)*\""; sqre = "^([^" sq "\\\\]|\\\\.)*" sq
}
{
	if (skip) {
		if ($0 == lua_end) skip = 0
		next
	}
	if (q == "" && !inword && !needspace) {
		# swarmgate's Lua (its sha256 checked by lua_policy): at a statement's start, skipped
		if (n == 0 && ($0 == lua_begin || $0 == lua_line)) {
			skip = $0 == lua_begin
			next
		}
		# Most lines: no quote, escape, comment or `${` (a fast path, the same tokens): words split
		# at blanks, `;` and `{` on their own, `}` only at a word's start.
		if (index($0, "${") == 0 && $0 !~ slow) {
			s = $0
			gsub(/[;{]/, " & ", s)
			k = split(s, f, /[ \t\r]+/)
			for (i = 1; i <= k; i++) {
				t = f[i]
				if (t == ";" || t == "{") {
					if (n == 0) fail("unexpected '" t "'")
					statement(t == "{")
				} else {
					while (substr(t, 1, 1) == "}") {
						if (n != 0 || depth == 0) fail("unexpected '}'")
						depth--
						t = substr(t, 2)
					}
					if (t != "") w[++n] = t
				}
			}
			next
		}
	}
}
{
	s = $0
	while (1) {
		if (q != "") {
			if (match(s, q == dq ? dqre : sqre)) {
				cur = cur substr(s, 1, RLENGTH - 1); s = substr(s, RLENGTH + 1); q = ""; word(); needspace = 1
			} else { cur = cur s "\n"; break }
			continue
		}
		if (inword) {
			if (match(s, /^[^ \t\r;{\\$]+/)) { cur = cur substr(s, 1, RLENGTH); s = substr(s, RLENGTH + 1) }
			c = substr(s, 1, 1)
			if (c == "\\") { if (length(s) == 1) { cur = cur "\\\n"; s = ""; esc = 1; break } cur = cur substr(s, 1, 2); s = substr(s, 3); continue }
			if (c == "$") { if (substr(s, 2, 1) == "{") { cur = cur "${"; s = substr(s, 3) } else { cur = cur "$"; s = substr(s, 2) } continue }
			word()
			if (s == "") break
			continue
		}
		if (needspace) {
			c = substr(s, 1, 1)
			if (c == "") break
			if (c ~ /[ \t\r]/) needspace = 0
			else if (c == ")") needspace = 0
			else if (c != ";" && c != "{") fail("unexpected '" c "' after a quoted string")
		}
		sub(/^[ \t\r]+/, "", s)
		if (s == "") break
		c = substr(s, 1, 1)
		if (c == ";" || c == "{") {
			if (n == 0) fail("unexpected '" c "'")
			needspace = 0; statement(c == "{"); s = substr(s, 2)
		} else if (c == "}") {
			if (n != 0) fail("unexpected '}'")
			if (depth == 0) fail("unexpected '}'")
			depth--; s = substr(s, 2)
		} else if (c == "#") {
			break
		} else if (c == dq || c == sq) {
			q = c; cur = ""; s = substr(s, 2)
		} else {
			inword = 1; cur = ""
		}
	}
	# the end of the line: whitespace, unless escaped or inside quotes
	if (esc) esc = 0
	else { if (inword) word(); needspace = 0 }
}
END {
	if (bad) exit 1
	if (q != "" || inword || n != 0 || depth != 0 || skip) fail("the config ends inside a directive or block")
}
EOF
}

# SWARMGATE_POLICY_CHECK=FILE: the content policy on FILE alone (why on stdout; exit status 0 or 1),
# for the renderer's configs (tests/unit/test_agent_policy.py); nothing else runs.
if [ -n "${SWARMGATE_POLICY_CHECK:-}" ]; then
	mkdir -p "$WORK" || exit 2
	policy "$SWARMGATE_POLICY_CHECK"
	checked=$?
	cat "$WORK/message"
	exit "$checked"
fi

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

restore() { # restore: the last good config (and its control file, with its peers) back at the live path
	peers=$prev_peers admitted=$prev_admitted
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
	[ "$digest" = "$pending" ] || drop_pending # a newer push replaces a waiting one
	if [ "$digest" = "$serving" ]; then # pushed twice (an operator restarted mid-push): say so again
		status_ok
		log "already serving $serving (term $fterm seq $fseq)"
		return
	fi
	if ! policy "$WORK/candidate"; then
		reject "$digest" "$WORK/message"
		return
	fi
	n=$(missing_certs "$WORK/candidate" | wc -l)
	if [ "$n" -gt 0 ]; then
		await_certs "$digest" "$1" "$n"
		return
	fi
	install "$digest" "$1"
}

missing_certs() { # missing_certs FILE: the courier's files FILE names that are not there (yet), one a line
	grep -o -E -e "$CERTS_RE/[A-Za-z0-9]+\.pem" "$1" | sort -u | while read -r f; do
		[ -e "$f" ] || echo "$f"
	done
}

drop_pending() {
	pending=""
	rm -f "$WORK/pending.conf" "$WORK/pending.push"
}

await_certs() { # await_certs DIGEST FILE N: the checked config in $WORK/candidate waits for N files
	if [ "$1" != "$pending" ]; then
		uptime_now
		pending_since=$now
		cp "$WORK/candidate" "$WORK/pending.conf" && cp "$2" "$WORK/pending.push" || {
			drop_pending
			echo "cannot keep the config while it waits for its certificate files" >"$WORK/message"
			reject "$1" "$WORK/message"
			return
		}
		log "config $1 waits for $3 certificate files in $CERTS"
	fi
	pending=$1
	status_waiting "$3"
}

retry_pending() { # the waiting push: applied once its files are there, rejected after CERT_WAIT s
	missing_certs "$WORK/pending.conf" >"$WORK/missing"
	if [ ! -s "$WORK/missing" ]; then
		p_digest=$pending
		pending=""
		log "the certificate files of config $p_digest are in place"
		# The policy held when it came; it runs again for the peers it sets (p_peers).
		if ! cp "$WORK/pending.conf" "$WORK/candidate" || ! policy "$WORK/candidate"; then
			reject "$p_digest" "$WORK/message"
		else
			install "$p_digest" "$WORK/pending.push"
		fi
		rm -f "$WORK/pending.conf" "$WORK/pending.push"
		return
	fi
	uptime_now
	if [ $((now - pending_since)) -ge "$CERT_WAIT" ]; then
		p_digest=$pending
		drop_pending
		{
			sed 's/^/certificate file not delivered: /' "$WORK/missing" | head -n 20
			echo "(waited ${CERT_WAIT} s for the certificate courier to bring them)"
		} >"$WORK/message"
		reject "$p_digest" "$WORK/message"
	fi
}

# peers_only FILE: 0 when FILE differs from the config served only between the peers markers, and
# both run swarmgate's balancer (so the workers can take the new peers without a reload).
peers_only() {
	grep -q -x -F -e "$LUA_BEGIN" "$1" && grep -q -x -F -e "$PEERS_BEGIN" "$1" &&
		grep -q -x -F -e "$LUA_BEGIN" "$CONF" && grep -q -x -F -e "$PEERS_BEGIN" "$CONF" || return 1
	sed "/^$PEERS_BEGIN\$/,/^$PEERS_END\$/d" "$1" >"$WORK/rest.new" &&
		sed "/^$PEERS_BEGIN\$/,/^$PEERS_END\$/d" "$CONF" >"$WORK/rest.served" &&
		cmp -s "$WORK/rest.new" "$WORK/rest.served"
}

# install_peers DIGEST FILE: the candidate changes peers only: checked, installed for the next start
# or reload, and handed to the running workers in PEERS_FILE; nginx is not signalled.
install_peers() {
	digest=$1
	cp "$CONF" "$WORK/last-good" || return
	prev_peers=$peers prev_admitted=$admitted # the control server's list is the same (peers_only)
	if ! { cp "$WORK/candidate" "$CONF.new" && mv "$CONF.new" "$CONF"; }; then
		restore
		echo "cannot install the config at $CONF" >"$WORK/message"
		reject "$digest" "$WORK/message"
		return
	fi
	if ! check; then
		restore
		reject "$digest" "$WORK/message"
		return
	fi
	stamp=""
	read -r stamp _ </proc/uptime
	if ! { { echo "${stamp:-0}" && sed -n "/^$PEERS_BEGIN\$/,/^$PEERS_END\$/p" "$CONF"; } >"$PEERS_FILE.new" &&
		chmod 644 "$PEERS_FILE.new" && mv "$PEERS_FILE.new" "$PEERS_FILE"; }; then
		rm -f "$PEERS_FILE.new"
		restore
		echo "cannot write the new peers to $PEERS_FILE" >"$WORK/message"
		reject "$digest" "$WORK/message"
		return
	fi
	serving=$digest
	uptime_now
	last_ok=$now heard="" cap_told=0 # a push is a listed peer at work: the dead-man rule starts over
	cp "$2" "$STATE/config.new" && mv "$STATE/config.new" "$STATE/config" || log "cannot save to $STATE"
	status_ok
	log "serving $serving (term $fterm seq $fseq): peers only, no reload"
}

install() { # install DIGEST FILE: the config in $WORK/candidate (it kept to the policy) is served
	digest=$1
	if peers_only "$WORK/candidate"; then
		install_peers "$@"
		return
	fi
	cp "$CONF" "$WORK/last-good" || return
	# The candidate's peers replace the served ones and whatever the dead-man rule admitted.
	prev_peers=$peers prev_admitted=$admitted
	peers=$p_peers admitted=""
	if ! { cp "$WORK/candidate" "$CONF.new" && mv "$CONF.new" "$CONF" &&
		control_conf "$(size_of "$CONF")"; }; then
		restore
		echo "cannot install the config at $CONF" >"$WORK/message"
		reject "$digest" "$WORK/message"
		return
	fi
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
	if [ -n "$prev_admitted" ]; then
		log "the new config's peers list replaces the addresses admitted without a listed peer:" \
			"$(addresses $prev_admitted)"
	fi
	uptime_now
	last_ok=$now heard="" cap_told=0 # a push is a listed peer at work: the dead-man rule starts over
	# Saved for the next task on this node: it starts from here, not from the bootstrap.
	cp "$2" "$STATE/config.new" && mv "$STATE/config.new" "$STATE/config" || log "cannot save to $STATE"
	status_ok
	log "serving $serving (term $fterm seq $fseq)"
}

# -- the dead-man rule ---------------------------------------------------------------------------
uptime_now() { # now: whole seconds since boot (/proc/uptime; the wall clock may jump)
	now=0
	read -r up _ </proc/uptime && now=${up%%.*}
	case $now in "" | *[!0-9]*) now=0 ;; esac
}

addresses() { # addresses NET...: the networks' addresses, `/32` and `/128` dropped, comma-separated
	a_out=""
	for a in "$@"; do a_out="$a_out, ${a%/*}"; done
	echo "${a_out#, }"
}

count() { echo $#; }

# watch: the control server's access log, read and emptied (nginx appends to it: O_APPEND), then the
# dead-man rule. A 2xx is a listed peer using the channel (only they pass the filter); a 403 a client
# that presented the channel's certificate (without it nginx closes the connection (444) before its access phase) from an
# unlisted address. When no 2xx came for $GRACE s and some such client did meanwhile, it is admitted.
# The log is nginx's record of network input: only its first field ($remote_addr) is used, and only
# if it is strictly an IPv4 or IPv6 address; a line's status is the field after the quoted request
# (nginx escapes `"` inside logged values, so the first two quotes enclose the request).
watch() {
	uptime_now
	next_watch=$((now + 2))
	[ "$keyed" = 1 ] || return 0
	if [ -s "$CONTROL/access.log" ]; then
		sed -n -E -e 's/^[^[:space:]"]+ [^"]*"[^"]*" 2[0-9][0-9] .*/ok/p' \
			-e 's/^([^[:space:]"]+) [^"]*"[^"]*" 403 .*/403 \1/p' "$CONTROL/access.log" >"$WORK/access.seen"
		: >"$CONTROL/access.log" # a line written between the two is lost: a missed sample, no more
		w_last=$(grep -n -x -F -e ok "$WORK/access.seen" | tail -n 1)
		w_last=${w_last%%:*}
		if [ -n "$w_last" ]; then
			last_ok=$now heard=""
		fi
		if [ -n "$peers" ]; then # 403s after the last 2xx, each address once
			tail -n +$((${w_last:-0} + 1)) "$WORK/access.seen" | sort -u | head -n 64 >"$WORK/access.refused"
			while read -r w_code w_addr w_rest; do
				[ "$w_code" = 403 ] && [ -z "$w_rest" ] && ip_of "$w_addr" || continue
				case " $admitted $heard " in *" $ip "*) continue ;; esac
				if [ "$(count $admitted $heard)" -ge "$ADMIT_CAP" ]; then
					[ "$cap_told" = 1 ] || log "the dead-man rule admits at most $ADMIT_CAP addresses:" \
						"${ip%/*} (refused, with the channel key) stays refused"
					cap_told=1
					continue
				fi
				heard="${heard:+$heard }$ip"
			done <"$WORK/access.refused"
		fi
		rm -f "$WORK/access.seen" "$WORK/access.refused"
	fi
	if [ -n "$peers" ] && [ -n "$heard" ] && [ $((now - last_ok)) -ge "$GRACE" ]; then
		admit
	fi
}

admit() { # admit: the addresses in `heard` join the filter (control file, nginx -t, reload), loudly
	d_prev=$admitted
	d_gap=$((now - last_ok))
	admitted="${admitted:+$admitted }$heard"
	d_why=""
	if ! control_conf "$(size_of "$CONF")"; then
		d_why="cannot write $CONTROL/server.conf"
	elif ! check; then
		d_why="nginx -t: $(head -n 1 "$WORK/message")"
	elif ! reload; then
		d_why="nginx did not start new workers within 5 s"
	fi
	if [ -z "$d_why" ]; then
		for a in $heard; do
			log "no listed peer used the control server for $d_gap s; admitting ${a%/*}, which presented" \
				"the channel key (until the next config is applied)"
		done
	else
		admitted=$d_prev
		control_conf "$(size_of "$CONF")"
		log "no listed peer used the control server for $d_gap s, but $(addresses $heard) could not be" \
			"admitted: $d_why"
	fi
	heard=""
	last_ok=$now # a new window: more refused key holders wait another $GRACE s
}

# -- key rotation -------------------------------------------------------------------------------
refuse_rekey() { log "refused a rekey: $*"; }

# rekey FILE: the rekey in FILE, read once. Accepted only if, in this order: its header parses; its MAC
# is the current key's; it names this task; its generation is newer than the current one; the key it
# carries has the header's sha256, is a key file and comes from a holder of the bootstrap key (MAC0).
# Then the new key serves (nginx -t, reload) or everything goes back to the old one.
rekey() {
	if ! key_header "$1" || [ "$(printf '%s' "$PROTOCOL key $k_task $k_gen $k_sum $k_mac0" | mac)" != "$k_mac" ]; then
		refuse_rekey "not a $PROTOCOL key header with the current key's MAC"
		return
	fi
	if [ "$k_task" != "$TASK" ]; then
		refuse_rekey "aimed at task $k_task"
		return
	fi
	if [ "$k_gen" -le "$kgen" ]; then
		refuse_rekey "generation $k_gen is not newer than the current one ($kgen)"
		return
	fi
	if ! key_origin "$1" "$WORK/key.new" || ! pads "$khex" .new; then
		khex=""
		refuse_rekey "${k_why:-cannot read the new key}"
		return
	fi
	khex=""
	# The saved config is signed with the current key, and the next start checks it with the new one.
	# So the agent signs it again, with the new key: it holds that key anyway, and whoever can write
	# $STATE and holds the key could sign anything already. The new header says term 0 seq 0, as the
	# fence starts over with the new key (below). Staged here, renamed into place once the key is saved.
	if [ -s "$STATE/config" ] && authentic "$STATE/config" && text_of "$STATE/config" "$WORK/saved"; then
		resigned="$PROTOCOL config $h_task 0 0 $h_digest"
		if ! m=$(printf '%s' "$resigned" | mac .new) ||
			! { echo "$resigned $m" && cat "$WORK/saved"; } >"$STATE/config.rekey"; then
			rm -f "$STATE/config.rekey"
			refuse_rekey "cannot save the config signed with the new key to $STATE"
			return
		fi
	fi
	# A key this agent cannot remember is not used (a restart would go back to the old one).
	if ! { cp "$1" "$STATE/key.new" && chmod 600 "$STATE/key.new"; } ||
		! { cp "$KEYDIR/channel.pem" "$KEYDIR/channel.pem.old" && cp "$WORK/ipad" "$WORK/ipad.old" &&
			cp "$WORK/opad" "$WORK/opad.old"; }; then
		rm -f "$STATE/key.new" "$STATE/config.rekey"
		refuse_rekey "cannot save the new key to $STATE"
		return
	fi
	# The switch: the key nginx reads, the pads, the generation and the fence. Each generation has
	# its own status file, signed with its key and written before the reload: a connection made with
	# either certificate reads a status signed with that certificate's key.
	old_gen=$kgen old_status=$STATUS old_fterm=$fterm old_fseq=$fseq
	kgen=$k_gen
	STATUS=$(status_path "$kgen")
	fterm=0
	fseq=0
	hupped=0
	if cp "$WORK/key.new" "$KEYDIR/channel.pem.new" && chmod 600 "$KEYDIR/channel.pem.new" &&
		mv "$KEYDIR/channel.pem.new" "$KEYDIR/channel.pem" && mv "$WORK/ipad.new" "$WORK/ipad" &&
		mv "$WORK/opad.new" "$WORK/opad" && status_again && control_conf "$(size_of "$CONF")"; then
		if ! check; then
			why="the new key fails nginx -t: $(head -n 1 "$WORK/message")"
		elif ! reload; then
			why="nginx did not start new workers with the new key within 5 s"
			hupped=1
		else
			# Served. Saved: the key first, then what it signs. The fence belongs to a key: with the
			# old one gone, so is its fence (a leaked old key's huge term must not lock the operator
			# out); no fence file is `0 0`. A start between these renames finds config.rekey.
			if mv "$STATE/key.new" "$STATE/key"; then
				rm -f "$STATE/fence"
				[ ! -e "$STATE/config.rekey" ] || mv "$STATE/config.rekey" "$STATE/config"
			else # a restart goes back to the old key: leave it what that key signed
				rm -f "$STATE/key.new" "$STATE/config.rekey"
				log "cannot save the new key in $STATE: a restart goes back to generation $old_gen"
			fi
			rm -f "$old_status" "$KEYDIR/channel.pem.old" "$WORK/ipad.old" "$WORK/opad.old" "$WORK/key.new" \
				"$WORK/saved"
			log "rekeyed to generation $kgen"
			return
		fi
	else
		why="cannot install the new key"
	fi
	# Back to the old key: its file, pads, generation, status file and fence; nothing was saved.
	rm -f "$STATUS" "$STATE/key.new" "$STATE/config.rekey" "$WORK/key.new" "$WORK/ipad.new" "$WORK/opad.new"
	mv "$KEYDIR/channel.pem.old" "$KEYDIR/channel.pem"
	mv "$WORK/ipad.old" "$WORK/ipad"
	mv "$WORK/opad.old" "$WORK/opad"
	kgen=$old_gen STATUS=$old_status fterm=$old_fterm fseq=$old_fseq
	control_conf "$(size_of "$CONF")"
	if [ "$hupped" = 1 ]; then
		reload || log "the old key did not reload either"
	fi
	refuse_rekey "$why; still generation $kgen"
}

# -- per-route traffic ----------------------------------------------------------------------------
# nginx appends one line per request to $TRAFFIC/traffic.log (the renderer's `swarmgate_traffic`
# format, buffered in each worker: flushed at 64k, after 1 s, on a reopen and when a worker exits):
#   BYTES_SENT BYTES_RECEIVED KEY|STATUS|REQUEST_TIME|UPSTREAM_TIMES|UPSTREAM_ADDRS
# (the last two list every upstream tried, `a, b` or `a : b`: the last one counts). The key is the
# config's, never the request's. Each tick the aggregator counts the batches renamed at an earlier
# tick, then renames the log to the next batch and sends nginx USR1 (reopen): the master and every
# worker, those a reload left finishing their requests included, flush their buffers into the renamed
# file and open a new one. So one tick later no worker writes to that batch any more, and it is
# counted whole. Counting: one awk pass over the batches, the counters so far and nothing else; its
# output and the number of the last batch counted replace $WORK/traffic.state whole (a rename) before
# the batches are removed (a batch at or below that number is then removed uncounted), so an
# aggregator killed at any point neither loses a line nor counts one twice.
TRAFFIC_AWK='
function last(list,   a, m) {
	if (index(list, " ") == 0) return list
	m = split(list, a, " ")
	return a[m]
}
function observe(k, t, n,   b) {
	b = 0
	while (b < 11 && t > LE[b]) b++
	H[k, b] += n
	S[k] += t * n
}
BEGIN {
	split("0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10", le, " ")
	for (i = 1; i <= 11; i++) LE[i - 1] = le[i] + 0
	getline line < state # the header: the epoch and the last batch counted
	while ((getline line < state) > 0) {
		n = split(line, f, " ")
		if (f[1] == "c" && n == 7) {
			k = f[2] " " f[3] " " f[4]
			R[k] += f[5]; BS[k] += f[6]; BR[k] += f[7]
		} else if (f[1] == "h" && n == 17) {
			k = f[2] " " f[3] " " f[4]
			S[k] += f[17]
			for (i = 0; i < 12; i++) H[k, i] += f[5 + i]
		}
	}
	close(state)
}
# The hot path: one field of the line is the whole key of its group, bytes are summed beside it.
NF == 3 { N[$3]++; TS[$3] += $1; TR[$3] += $2; next }
NF > 3 { s = $3; for (i = 4; i <= NF; i++) s = s " " $i; N[s]++; TS[s] += $1; TR[s] += $2 }
END {
	for (s in N) {
		if (split(s, f, "|") != 5) continue
		c = substr(f[2], 1, 1)
		if (c < "1" || c > "5") continue
		if (f[1] == "") f[1] = "-"
		u = last(f[5])
		if (u == "") u = "-"
		k = f[1] " " u
		n = N[s]
		ck = k " " c "xx"
		R[ck] += n; BS[ck] += TS[s]; BR[ck] += TR[s]
		observe(k " request", f[3] + 0, n)
		t = last(f[4])
		if (u != "-" && t != "-" && t != "") observe(k " upstream", t + 0, n)
	}
	for (k in R) printf "c %s %.0f %.0f %.0f\n", k, R[k], BS[k], BR[k]
	for (k in S) {
		line = "h " k
		for (i = 0; i < 12; i++) line = line " " (H[k, i] + 0)
		printf "%s %.3f\n", line, S[k]
	}
}'

traffic_batches() { # the numbers of the batches waiting in $TRAFFIC, one a line, ascending
	for b in "$TRAFFIC"/batch.*; do
		b=${b##*/batch.}
		case $b in "" | *[!0-9]*) ;; *) echo "$b" ;; esac
	done | sort -n
}

# traffic_count UPTO: counts the batches numbered UPTO and below that are not counted yet (t_done).
traffic_count() {
	t_files=""
	for b in $(traffic_batches); do
		[ "$b" -le "$1" ] || break
		if [ "$b" -le "$t_done" ]; then
			rm -f "$TRAFFIC/batch.$b" # counted already: the aggregator stopped before removing it
		else
			t_files="$t_files $TRAFFIC/batch.$b"
		fi
	done
	[ -n "$t_files" ] || return 0
	# shellcheck disable=SC2086 # the batch paths: digits under $TRAFFIC, no spaces
	if "$AWK" -v state="$WORK/traffic.state" "$TRAFFIC_AWK" $t_files >"$WORK/traffic.$t_gen" &&
		{ echo "$PROTOCOL traffic-state $EPOCH $1" && sort "$WORK/traffic.$t_gen"; } >"$WORK/traffic.state.$t_gen" &&
		mv "$WORK/traffic.state.$t_gen" "$WORK/traffic.state"; then
		t_done=$1
		# shellcheck disable=SC2086
		rm -f $t_files
	else
		log "cannot count the traffic log (batches$t_files kept for the next tick)"
	fi
	rm -f "$WORK/traffic.$t_gen" "$WORK/traffic.state.$t_gen"
}

traffic_serve() { # the served file, replaced whole: header (TASK EPOCH UPTIME), then the counters
	read -r t_up _ </proc/uptime
	{ echo "$PROTOCOL traffic $TASK $EPOCH ${t_up:-0}" && tail -n +2 "$WORK/traffic.state"; } >"$DIR/traffic.$t_gen" &&
		chmod 644 "$DIR/traffic.$t_gen" && mv "$DIR/traffic.$t_gen" "$DIR/traffic"
}

# traffic_loop NGINX_PID GEN: the aggregator, a child of the agent (restarted by it, as GEN + 1, if it
# dies), until the agent is gone. Its first USR1 makes nginx reopen the log, so a batch renamed by an
# aggregator that died before its own USR1 gets no more lines either.
traffic_loop() {
	t_gen=$2
	t_done=0
	read -r _ _ _ t_done _ <"$WORK/traffic.state" 2>/dev/null
	case $t_done in "" | *[!0-9]*) t_done=0 ;; esac
	t_next=$t_done
	for b in $(traffic_batches); do [ "$b" -le "$t_next" ] || t_next=$b; done
	t_seen=$t_next # renamed before this start: counted after the next tick
	t_next=$((t_next + 1))
	kill -USR1 "$1" 2>/dev/null
	while kill -0 "$$" 2>/dev/null && kill -0 "$1" 2>/dev/null; do
		pause "$TRAFFIC_TICK"
		traffic_count "$t_seen"
		if [ -s "$TRAFFIC/traffic.log" ] && mv "$TRAFFIC/traffic.log" "$TRAFFIC/batch.$t_next"; then
			kill -USR1 "$1" 2>/dev/null
			t_next=$((t_next + 1))
		fi
		t_seen=$((t_next - 1))
		traffic_serve
	done
}

traffic_alive() { # the aggregator runs (a dead child the shell has not reaped yet is a zombie: `Z`)
	t_stat=""
	read -r t_stat 2>/dev/null <"/proc/$traffic_pid/stat" || return 1
	t_stat=${t_stat##*) }
	[ "${t_stat%% *}" != Z ]
}

traffic_start() { # the aggregator, in the background; its pid in traffic_pid
	t_gens=$((t_gens + 1))
	traffic_loop "$nginx_pid" "$t_gens" &
	traffic_pid=$!
}

# `agent.sh traffic NGINX_PID`: the aggregator alone, beside an nginx this agent did not start (the
# data-plane benchmark runs it so, to count its cost), until that nginx exits.
if [ "${1:-}" = traffic ]; then
	trap - TERM QUIT INT
	mkdir -p "$WORK" "$TRAFFIC" && chmod 700 "$WORK" || exit 1
	EPOCH=$(date +%s)-$$
	t_gen=0
	{ echo "$PROTOCOL traffic-state $EPOCH 0" >"$WORK/traffic.state" && traffic_serve; } || exit 1
	log "traffic aggregator started ($AWK, every $TRAFFIC_TICK s) for nginx $2, epoch $EPOCH"
	traffic_loop "$2" 1
	exit 0
fi

# -- start --------------------------------------------------------------------------------------
case $CERT_WAIT in "" | *[!0-9]* | 0?*) CERT_WAIT=120 ;; esac
case $TRAFFIC_TICK in
[1-9] | [1-9][0-9] | [0-9].[0-9] | [0-9].[0-9][0-9]) [ "$TRAFFIC_TICK" != 0.0 ] && [ "$TRAFFIC_TICK" != 0.00 ] ||
	TRAFFIC_TICK=2 ;;
*)
	log "SWARMGATE_TRAFFIC_TICK must be seconds such as 2 or 0.5: using 2"
	TRAFFIC_TICK=2
	;;
esac
# The certs dir as an extended regular expression (its dots are literal).
CERTS_RE=$(printf '%s' "$CERTS" | sed 's/[.[\*^$()+?{|]/\\&/g')
case $GRACE in "" | *[!0-9]* | 0?*) GRACE=bad ;; esac
if [ "$GRACE" = bad ] || [ ${#GRACE} -gt 9 ]; then
	log "SWARMGATE_PEER_GRACE must be whole seconds: using 60"
	GRACE=60
fi
umask 077
mkdir -p "$CONTROL" "$KEYDIR" "$WORK" "$INBOX" "$STATE" "$TRAFFIC" || exit 1
chmod 755 "$DIR" "$CONTROL" "$TRAFFIC" && chmod 700 "$KEYDIR" "$WORK" || exit 1
# nginx's workers (the config's `user`) create the pushed file; they may not list or read the inbox.
chmod 1733 "$INBOX" || exit 1
# A previous container's leftovers; nothing but the agent's own file may sit in control/.
rm -f "$INBOX/config" "$INBOX/key" "$DIR/status" "$DIR"/status-g* "$KEYDIR"/* "$WORK"/ipad* "$WORK"/opad* \
	"$WORK"/key.* "$CONTROL"/* "$STATE/key.new" "$WORK"/traffic* "$DIR"/traffic* "$TRAFFIC"/* || exit 1
# The traffic counters start from zero, in an epoch of their own (the agent's start and pid).
EPOCH=$(date +%s)-$$
t_gen=0
{ echo "$PROTOCOL traffic-state $EPOCH 0" >"$WORK/traffic.state" && traffic_serve; } || exit 1
# The current key: the newest generation a rekey saved here, if it proves its origin with the
# bootstrap key (it may have come to an earlier task on this node); else the bootstrap key itself.
k_why=""
key_src=$KEY_FILE
if load_key; then
	if [ -e "$STATE/key" ]; then
		if key_header "$STATE/key" && key_origin "$STATE/key" "$WORK/key.saved"; then
			key_src=$WORK/key.saved
			kgen=$k_gen
		else
			log "the saved key is not a generation of the bootstrap key (${k_why:-not a $PROTOCOL key header}):" \
				"ignored, using the bootstrap key"
		fi
	fi
	[ "$key_src" != "$KEY_FILE" ] || key_file_ok "$KEY_FILE"
	install_key "$key_src" && keyed=1
	rm -f "$WORK/key.saved"
	STATUS=$(status_path "$kgen")
fi
khex=""
if [ "$keyed" != 1 ]; then
	kgen=0
	STATUS=$DIR/status
	log "no usable channel key in $KEY_FILE: serving, but nothing can push a config"
fi

# A rekey that stopped between saving its key and the config it signed again: if that key is the
# current one, that config is the one to keep; else the rekey never happened.
if [ -e "$STATE/config.rekey" ]; then
	if [ "$keyed" = 1 ] && authentic "$STATE/config.rekey"; then
		mv "$STATE/config.rekey" "$STATE/config"
	else
		rm -f "$STATE/config.rekey"
	fi
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
		elif peers=$p_peers && cp "$WORK/candidate" "$CONF" && control_conf "$(size_of "$CONF")" && check; then
			serving=$h_digest
			start_from="saved config $serving"
		fi
	fi
fi
if [ "$serving" = - ]; then
	# The bootstrap names no peers (it is part of the proxy spec); if it does, they apply.
	peers=""
	if peers_of "$BOOTSTRAP" >"$WORK/message"; then
		peers=$p_peers
	else
		log "the bootstrap's peers line is ignored: $(head -n 1 "$WORK/message")"
	fi
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
log "nginx started (pid $nginx_pid) from $start_from, key generation $kgen, fence term $fterm seq $fseq"
if [ -n "$peers" ]; then
	log "the control server admits $peers only (after $GRACE s without them, key holders refused by address)"
fi
uptime_now
last_ok=$now # the dead-man rule's first window starts with the agent

# Ready = the master has spawned workers; it installs its signal handlers before that. Until then
# no signal goes to nginx (a HUP before the handlers kills it with status 129).
while [ -z "$(workers)" ] && nginx_alive; do
	pause 0.05
done
if [ "$phase" = stopping ]; then
	kill -QUIT "$nginx_pid" 2>/dev/null
elif nginx_alive; then
	phase=serving
	traffic_start
	log "traffic aggregator started (pid $traffic_pid, $AWK, every $TRAFFIC_TICK s), epoch $EPOCH"
fi

while [ "$phase" = serving ] && nginx_alive; do
	uptime_now
	[ "$now" -lt "$next_watch" ] || watch
	if ! traffic_alive; then
		traffic_start
		log "the traffic aggregator had died: started again (pid $traffic_pid); nothing it had not counted is lost"
	fi
	# nginx renames a PUT into place whole; taking it away by rename leaves the inbox free.
	if mv "$INBOX/key" "$WORK/key.incoming" 2>/dev/null; then
		rekey "$WORK/key.incoming"
		rm -f "$WORK/key.incoming" "$WORK/key.new" "$WORK/ipad.new" "$WORK/opad.new" "$WORK/saved"
	elif mv "$INBOX/config" "$WORK/incoming" 2>/dev/null; then
		apply "$WORK/incoming"
	elif [ -n "$pending" ]; then
		retry_pending
		pause 0.5
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
