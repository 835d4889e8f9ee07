"""nginx table sizes computed from the routes themselves, so no one service's labels overflow them (pure).

nginx refuses a whole config when one value does not fit a size fixed in it: a host name longer than
`server_names_hash_bucket_size` allows ("could not build server_names_hash, you should increase
server_names_hash_bucket_size"), or more upstream servers than an upstream's shared-memory `zone`
holds ("ngx_slab_alloc() failed: no memory in upstream zone"). Both depend on what services ask
for (a 253-character host, a service scaled to 80 tasks), so the sizes are computed from the route
table, never taken as fixed: the configured value is a floor.
"""

from __future__ import annotations

from collections.abc import Iterable

# nginx aligns the bucket size to the CPU's cache line; 64 bytes on the machines it runs on.
MIN_BUCKET = 64
DEFAULT_HASH_MAX = 512
# Measured with nginx 1.22 (Debian 12), upstream servers of the longest IPv4 form
# (255.255.255.255:65535): a 64k zone holds 63 servers, 256k 304, 1024k 1280, 4096k 5192, i.e.
# about 0.8 KiB per server above ~17 KiB of the zone's own. One KiB per server above 32 KiB keeps a
# margin for nginx builds that store a little more per server.
ZONE_BASE_KB = 32
ZONE_KB_PER_SERVER = 1


def server_names_hash_sizes(hosts: Iterable[str], configured_bucket: int) -> tuple[int, int]:
    """`server_names_hash_bucket_size` and `server_names_hash_max_size` that fit every host.

    nginx's own rule (ngx_hash.c): a bucket must hold a pointer, the name plus two bytes padded to
    8, and the bucket's closing pointer. The bucket is the smallest power of two (at least the
    cache line) that holds the longest name, never less than configured; host names are at most
    253 characters (the label parser caps them), so it never exceeds 512. The hash may need more
    buckets than nginx's default maximum of 512 to give every name room: allow four per name.
    """
    names = list(hosts)
    longest = max((len(name) for name in names), default=0)
    needed = 8 + (longest + 2 + 7) // 8 * 8 + 8
    bucket = max(configured_bucket, MIN_BUCKET)
    while bucket < needed:
        bucket *= 2
    max_size = DEFAULT_HASH_MAX
    while max_size < 4 * len(names):
        max_size *= 2
    return bucket, max_size


def upstream_zone_kb(servers: int, configured_kb: int = 0) -> int:
    """Kilobytes an upstream's shared-memory zone needs for `servers` servers, at least `configured_kb`."""
    return max(configured_kb, ZONE_BASE_KB + ZONE_KB_PER_SERVER * servers)
