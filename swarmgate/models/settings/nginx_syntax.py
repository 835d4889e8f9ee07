"""nginx syntax for the values the config writes into nginx.conf as text (pure).

The raw lists (`GlobalOptions`, `HTTPOptions`, `TCPOptions`, `SSLOpts`) are written into the
rendered config as they are, one entry per line. Each entry must be exactly one complete directive:
a name, its arguments, and `;` (added when missing, as before), or one block `name args { ... }`
whose statements are complete too. It is tokenized the way nginx's own parser does (quotes with
backslash escapes, `{`, `}`, `;`), so an entry can never end the directive the template wrote
around it, open or close a block the template did not, or swallow the next line with a comment.

What the entries mean is left to `nginx -t` (the operator's check before publishing, and
`check-config` where nginx is installed), except what no check on the operator's side can vouch for:

* `include` and `load_module`, and directives that read a file (`ssl_trusted_certificate`,
  `auth_basic_user_file`, ...): the file exists only inside the proxy, so the operator could not
  check the whole config before it publishes it. Those are refused.
* directives the template already writes in the same context (`worker_processes` in
  `GlobalOptions`, `keepalive_timeout` in `HTTPOptions`...): nginx refuses the duplicate; each has
  its own key in the `Config` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ENTRY = 2048  # nginx reads its config in 4 KiB buffers; a longer token is "too long parameter"
MAX_ENTRIES = 256

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

# Directives whose argument names a file the proxy reads (or code it loads) at start.
FILE_DIRECTIVES = frozenset({
    "include", "load_module", "auth_basic_user_file", "ssl_certificate", "ssl_certificate_key",
    "ssl_client_certificate", "ssl_trusted_certificate", "ssl_crl", "ssl_dhparam", "ssl_password_file",
    "ssl_session_ticket_key", "ssl_stapling_file", "ssl_ecdh_curve_file", "proxy_ssl_certificate",
    "proxy_ssl_certificate_key", "proxy_ssl_trusted_certificate", "proxy_ssl_crl", "proxy_ssl_password_file",
    "ssl_conf_command", "lua_package_path", "perl_modules", "perl_require", "js_import", "js_include",
})

# What the default template already writes at the place each list goes (see nginx.conf.j2).
TEMPLATE_DIRECTIVES: dict[str, frozenset[str]] = {
    "GlobalOptions": frozenset({"user", "worker_processes", "worker_rlimit_nofile", "pid", "events", "http",
                                "stream", "daemon", "master_process"}),
    "HTTPOptions": frozenset({"server_tokens", "client_max_body_size", "client_body_buffer_size",
                              "client_header_buffer_size", "large_client_header_buffers", "client_body_timeout",
                              "keepalive_timeout", "underscores_in_headers", "server_names_hash_bucket_size",
                              "server_names_hash_max_size", "proxy_connect_timeout", "proxy_send_timeout",
                              "proxy_read_timeout", "proxy_http_version", "proxy_next_upstream"}),
    "TCPOptions": frozenset(),
    "SSLOpts": frozenset({"ssl_protocols", "ssl_ciphers", "ssl_reject_handshake", "listen", "server_name"}),
}


@dataclass(frozen=True)
class Token:
    text: str
    quoted: bool


def tokens(entry: str) -> list[Token]:
    """nginx's tokenizer: words, quoted strings (with backslash escapes), `{`, `}` and `;`."""
    out: list[Token] = []
    i, n = 0, len(entry)
    while i < n:
        ch = entry[i]
        if ch.isspace():
            i += 1
        elif ch in "{};":
            out.append(Token(ch, False))
            i += 1
        elif ch == "#":
            raise ValueError("a '#' outside quotes starts a comment that would hide the rest of the entry")
        elif ch in "\"'":
            j = i + 1
            while j < n and entry[j] != ch:
                j += 2 if entry[j] == "\\" else 1
            if j >= n:
                raise ValueError(f"unbalanced {ch} quote")
            out.append(Token(entry[i + 1:j], True))
            i = j + 1
            if i < n and not (entry[i].isspace() or entry[i] in "{};"):
                raise ValueError("a quoted argument must be followed by a space, ';' or a brace")
        else:
            j = i
            while j < n and not (entry[j].isspace() or entry[j] in "{};\"'"):
                # A backslash escapes the next character in a bare word too (as in nginx).
                j += 2 if entry[j] == "\\" else 1
            if j < n and entry[j] in "\"'":
                raise ValueError("a quote may only start an argument")
            out.append(Token(entry[i:min(j, n)], False))
            i = j
    return out


def _statements(toks: list[Token], pos: int, *, nested: bool, names: list[str]) -> int:
    """Parse statements from `pos` until the end (or the `}` that closes a block); return the end."""
    while pos < len(toks):
        head = toks[pos]
        if not head.quoted and head.text == "}":
            if nested:
                return pos
            raise ValueError("a '}' closes a block the entry did not open")
        if head.quoted or not _NAME.match(head.text):
            raise ValueError(f"expected a directive name, got {head.text!r}")
        names.append(head.text)
        pos += 1
        while pos < len(toks) and (toks[pos].quoted or toks[pos].text not in "{};"):
            pos += 1
        if pos >= len(toks):
            raise ValueError(f"directive {head.text!r} has no ending ';'")
        if toks[pos].text == "{":
            pos = _statements(toks, pos + 1, nested=True, names=names)
            if pos >= len(toks):
                raise ValueError(f"the block of {head.text!r} is not closed")
        elif toks[pos].text == "}":
            raise ValueError(f"directive {head.text!r} has no ending ';'")
        pos += 1
    return pos


def option_entry(raw: str, *, key: str) -> str:
    """One raw list entry, as written into the config; ValueError says what is wrong with it."""
    line = raw.strip()
    if not line:
        return ""
    if len(line) > MAX_ENTRY:
        raise ValueError(f"an entry may be at most {MAX_ENTRY} characters")
    if not line.endswith((";", "}")):
        line += ";"
    toks = tokens(line)
    names: list[str] = []
    _statements(toks, 0, nested=False, names=names)
    top = toks[0].text
    _one_statement(toks)
    for name in names:
        if name in FILE_DIRECTIVES:
            raise ValueError(f"{name!r} reads a file that exists only inside the proxy, so the operator "
                             "cannot check the config with nginx -t before publishing it; not allowed here")
    if top in TEMPLATE_DIRECTIVES.get(key, frozenset()):
        raise ValueError(f"{top!r} is already set by swarmgate's template here; use its own key in the Config table")
    if key == "SSLOpts" and not top.startswith("ssl_"):
        raise ValueError(f"SSLOpts holds ssl_* directives for the TLS servers, got {top!r}")
    return line


def _one_statement(toks: list[Token]) -> None:
    """The entry is one directive (or one block), not several: the first statement ends at the end."""
    depth = 0
    for index, tok in enumerate(toks):
        if tok.quoted:
            continue
        if tok.text == "{":
            depth += 1
        elif tok.text == "}":
            depth -= 1
            if depth == 0 and index != len(toks) - 1:
                raise ValueError("one directive per entry: put the next one in its own entry")
        elif tok.text == ";" and depth == 0 and index != len(toks) - 1:
            raise ValueError("one directive per entry: put the next one in its own entry")


def option_entries(values: tuple[str, ...], *, key: str) -> tuple[str, ...]:
    if len(values) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} entries")
    out = []
    for index, raw in enumerate(values):
        try:
            line = option_entry(raw, key=key)
        except ValueError as exc:
            raise ValueError(f"entry {index + 1} {raw[:60]!r}: {exc}") from None
        if line:
            out.append(line)
    return tuple(out)


# Variables a log format may use: nginx's own (core, proxy, upstream, ssl, realip), the families with
# a name suffix, and the two the template defines. An unknown variable makes nginx refuse the config.
LOG_VARIABLES = frozenset({
    "arg", "args", "binary_remote_addr", "body_bytes_sent", "bytes_sent", "connection", "connection_requests",
    "connection_time", "content_length", "content_type", "document_root", "document_uri", "host", "hostname",
    "https", "is_args", "limit_rate", "msec", "nginx_version", "pid", "pipe", "proxy_add_x_forwarded_for",
    "proxy_host", "proxy_port", "proxy_protocol_addr", "proxy_protocol_port", "proxy_protocol_server_addr",
    "proxy_protocol_server_port", "query_string", "realpath_root", "remote_addr", "remote_port", "remote_user",
    "request", "request_body", "request_completion", "request_filename", "request_id", "request_length",
    "request_method", "request_time", "request_uri", "scheme", "server_addr", "server_name", "server_port",
    "server_protocol", "ssl_cipher", "ssl_ciphers", "ssl_client_escaped_cert", "ssl_client_fingerprint",
    "ssl_client_i_dn", "ssl_client_raw_cert", "ssl_client_s_dn", "ssl_client_serial", "ssl_client_verify",
    "ssl_curves", "ssl_early_data", "ssl_protocol", "ssl_server_name", "ssl_session_id", "ssl_session_reused",
    "status", "tcpinfo_rtt", "tcpinfo_rttvar", "tcpinfo_snd_cwnd", "tcpinfo_rcv_space", "time_iso8601",
    "time_local", "upstream_addr", "upstream_bytes_received", "upstream_bytes_sent", "upstream_cache_status",
    "upstream_connect_time", "upstream_header_time", "upstream_response_length", "upstream_response_time",
    "upstream_status", "uri", "realip_remote_addr", "realip_remote_port", "gzip_ratio",
    "swarmgate_request_id", "swarmgate_connection_upgrade",
})
LOG_VARIABLE_PREFIXES = ("http_", "sent_http_", "sent_trailer_", "cookie_", "arg_", "upstream_http_",
                         "upstream_trailer_", "upstream_cookie_")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))?")


def log_format(value: str) -> str:
    """A log format, written between single quotes: no quote, no backslash, known variables only."""
    if "'" in value or "\\" in value:
        raise ValueError("expected a log format without single quotes or backslashes")
    if len(value) > MAX_ENTRY:
        raise ValueError(f"a log format may be at most {MAX_ENTRY} characters")
    for match in _VARIABLE.finditer(value):
        name = match.group(1) or match.group(2)
        if name is None:
            raise ValueError("a '$' must start a variable name, such as $remote_addr")
        lowered = name.lower()
        if lowered not in LOG_VARIABLES and not any(lowered.startswith(p) and len(lowered) > len(p)
                                                    for p in LOG_VARIABLE_PREFIXES):
            raise ValueError(f"unknown nginx variable ${name}")
    return value


def added_headers(entries: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(lower-cased header name, entry) of each top-level `add_header` entry. nginx inherits
    `add_header` only into blocks that set none of their own, and every location swarmgate renders
    sets its own: the template repeats these there, so they reach every response."""
    out = []
    for entry in entries:
        toks = tokens(entry)
        if len(toks) >= 3 and not toks[0].quoted and toks[0].text == "add_header":
            out.append((toks[1].text.lower(), entry))
    return tuple(out)
