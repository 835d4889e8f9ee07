"""The lab's three images, made on this machine without a registry or `docker build`.

Each image is a root filesystem assembled from the host's Debian binaries (plus the libraries `ldd`
lists), packed as a layer tar, and wrapped in the `docker save` archive format (manifest.json +
image config + layer tars) that `docker load` reads -- the same result as `docker import` with
`--change`, but reproducible: fixed timestamps and owners make the image ID a pure function of the
content, so "is node X current?" is one `docker image inspect` and all nodes hold the same ID.

Builds are cached in .cache/lab-images/ (outside .lab/, so `down` + `up` does not rebuild).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import CACHE_DIR, REPO, docker, log, run

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "images"
BUSYBOX = Path("/usr/bin/busybox")  # Debian's busybox-static
MAWK = Path("/usr/bin/mawk")
# Bump to force a rebuild of every image when the recipes below change in a way files do not show.
RECIPE_VERSION = "3"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Layer:
    tar: Path
    diff_id: str  # "sha256:..." of the uncompressed layer tar


@dataclass(frozen=True)
class Image:
    name: str
    archive: Path  # docker-save format, ready for `docker load`
    image_id: str  # "sha256:..." = digest of the config; what `docker image inspect` reports


# ---------------------------------------------------------------- hashing and packing


def _digest_files(paths: Iterable[Path], extra: str = "") -> str:
    h = hashlib.sha256(f"{RECIPE_VERSION}\0{extra}\0".encode())
    for p in sorted(paths):
        h.update(str(p).encode() + b"\0")
        h.update(p.read_bytes() if p.is_file() else b"<dir>")
    return h.hexdigest()[:16]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _pack(rootfs: Path, out: Path) -> Layer:
    """Tars a rootfs reproducibly (sorted names, epoch mtimes, root owner)."""
    tmp = out.with_suffix(".tmp")
    run(
        [
            "tar",
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
            "-C",
            rootfs,
            "-cf",
            tmp,
            ".",
        ]
    )
    tmp.rename(out)
    return Layer(out, _sha256_file(out))


def cached_layer(key: str, populate: Callable[[Path], None]) -> Layer:
    """Returns the layer cached under `key`, building it with populate(rootfs_dir) if missing."""
    layers = CACHE_DIR / "layers"
    layers.mkdir(parents=True, exist_ok=True)
    tar = layers / f"{key}.tar"
    meta = tar.with_suffix(".json")
    if tar.exists() and meta.exists():
        return Layer(tar, json.loads(meta.read_text())["diff_id"])
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        populate(rootfs)
        layer = _pack(rootfs, tar)
    meta.write_text(json.dumps({"diff_id": layer.diff_id}))
    # One cached version per kind is enough (each edit of swarmgate/ makes a new package layer).
    kind = key.rsplit("-", 1)[0] + "-"
    for old in layers.glob(kind + "*"):
        if old.stem != key and old.stem.rsplit("-", 1)[0] + "-" == kind:
            old.unlink(missing_ok=True)
    return layer


def assemble(name: str, layers: list[Layer], config: dict[str, object]) -> Image:
    """Writes a `docker save`-format archive for `name` out of layers and a container config."""
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "swarmgate lab/images.py"} for _ in layers],
    }
    blob = json.dumps(image_config, sort_keys=True, separators=(",", ":")).encode()
    image_id = "sha256:" + hashlib.sha256(blob).hexdigest()
    archive = CACHE_DIR / f"{name.replace('/', '_').replace(':', '_')}-{image_id[7:19]}.tar"
    if not archive.exists():
        tmp = archive.with_suffix(".tmp")
        manifest = [
            {
                "Config": f"{image_id[7:]}.json",
                "RepoTags": [name],
                "Layers": [f"{layer.diff_id[7:]}/layer.tar" for layer in layers],
            }
        ]
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
            _add_bytes(tf, f"{image_id[7:]}.json", blob)
            for layer in layers:
                tf.add(layer.tar, arcname=f"{layer.diff_id[7:]}/layer.tar")
            _add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
        tmp.rename(archive)
        # Older archives of the same image are dead weight: keep the cache from growing forever.
        prefix = archive.name.rsplit("-", 1)[0] + "-"
        for old in CACHE_DIR.glob(prefix + "*.tar"):
            if old != archive:
                old.unlink(missing_ok=True)
    return Image(name, archive, image_id)


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- rootfs helpers


def _copy_file(rootfs: Path, src: Path) -> None:
    """Copies a host file into the rootfs at its real path; the name it was asked by (e.g. the
    soname ldd printed, libpcre2-8.so.0 -> libpcre2-8.so.0.11.2) becomes a symlink to it.
    The rootfs mirrors Debian's merged-/usr directory symlinks, so resolved folders match."""
    real = os.path.realpath(src)
    target = rootfs / real.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(real, target)
    alias = rootfs / os.path.join(os.path.realpath(src.parent), src.name).lstrip("/")
    if alias != target and not alias.exists() and not alias.is_symlink():
        alias.parent.mkdir(parents=True, exist_ok=True)
        alias.symlink_to(real)


def _libraries(binaries: Iterable[Path]) -> set[Path]:
    libs: set[Path] = set()
    for binary in binaries:
        out = run(["ldd", binary], check=False).stdout
        for m in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", out):
            libs.add(Path(m.group(1)))
    return libs


def _base(rootfs: Path, users: str = "") -> None:
    """Debian-like merged-/usr skeleton with busybox applets, passwd/group and writable dirs."""
    for d in (
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "proc",
        "sys",
        "dev",
        "root",
        "var",
        "usr/local/bin",
    ):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (rootfs / link).symlink_to(f"usr/{link}")
    for d in ("tmp", "var/tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
        (rootfs / d).chmod(0o1777)
    (rootfs / "run").mkdir()
    (rootfs / "var/run").symlink_to("../run")
    (rootfs / "var/lock").symlink_to("../run/lock")
    shutil.copy2(BUSYBOX, rootfs / "usr/bin/busybox")
    applets = run([BUSYBOX, "--list"]).stdout.split()
    for applet in applets:
        link = rootfs / "usr/bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (rootfs / "usr/bin/wget").unlink()
    shutil.copy2(ASSETS / "wget.sh", rootfs / "usr/bin/wget")
    (rootfs / "usr/bin/wget").chmod(0o755)
    (rootfs / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n" + users
    )
    groups = "".join(f"{u.split(':')[0]}:x:{u.split(':')[3]}:\n" for u in users.splitlines())
    (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n" + groups)
    (rootfs / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")


# ---------------------------------------------------------------- the three images


# Debian builds nginx's stream module (SSL passthrough) as a dynamic module, package libnginx-mod-stream;
# nginx.org's images have it built in. Loaded as Debian does: a line in modules-enabled, a path relative
# to the prefix (the rendered config includes that folder when it has a stream block).
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def _stream_module(rootfs: Path) -> None:
    _copy_file(rootfs, STREAM_MODULE)
    for lib in _libraries([STREAM_MODULE]):
        _copy_file(rootfs, lib)
    # Debian's prefix is /usr/share/nginx, whose modules/ points at the real folder.
    prefix_modules = rootfs / "usr/share/nginx/modules"
    prefix_modules.parent.mkdir(parents=True, exist_ok=True)
    if not prefix_modules.is_symlink():
        prefix_modules.symlink_to("/usr/lib/nginx/modules")
    enabled = rootfs / "etc/nginx/modules-enabled"
    enabled.mkdir(parents=True, exist_ok=True)
    (enabled / "50-mod-stream.conf").write_text("load_module modules/ngx_stream_module.so;\n")


# LuaBalancer's lua-nginx-module: Debian's libnginx-mod-http-lua (with the NDK module it needs), LuaJIT,
# and the Lua libraries it loads at start (lua-resty-core, lua-resty-lrucache); enabled as Debian does.
LUA_MODULES = (Path("/usr/lib/nginx/modules/ndk_http_module.so"), Path("/usr/lib/nginx/modules/ngx_http_lua_module.so"))
LUA_LIBRARIES = (Path("/usr/share/lua/5.1"), *sorted(Path("/usr/share").glob("luajit-2.1*")))


def _lua_module(rootfs: Path) -> None:
    for module in LUA_MODULES:
        _copy_file(rootfs, module)
    for lib in _libraries(LUA_MODULES):
        _copy_file(rootfs, lib)
    for tree in LUA_LIBRARIES:
        for src in sorted(tree.rglob("*")):
            if src.is_file():
                _copy_file(rootfs, src)
    enabled = rootfs / "etc/nginx/modules-enabled"
    enabled.mkdir(parents=True, exist_ok=True)
    (enabled / "10-mod-http-ndk.conf").write_text("load_module modules/ndk_http_module.so;\n")
    (enabled / "50-mod-http-lua.conf").write_text("load_module modules/ngx_http_lua_module.so;\n")


def nginx_image() -> Image:
    nginx = Path("/usr/sbin/nginx")
    conf = ASSETS / "nginx"
    inputs = [nginx, MAWK, STREAM_MODULE, *LUA_MODULES, BUSYBOX, ASSETS / "wget.sh", Path("/etc/nginx/mime.types"),
              *conf.rglob("*"), *(f for tree in LUA_LIBRARIES for f in tree.rglob("*") if f.is_file()), Path(__file__)]

    def populate(rootfs: Path) -> None:
        _base(rootfs, users="nginx:x:101:101:nginx:/nonexistent:/bin/false\n")
        _copy_file(rootfs, nginx)
        for lib in _libraries([nginx]):
            _copy_file(rootfs, lib)
        # Debian's nginx images have mawk (Priority: required); the agent counts traffic with it, at a
        # quarter of busybox awk's CPU per log line (docs/benchmarks/data-plane.md).
        _copy_file(rootfs, MAWK)
        for lib in _libraries([MAWK]):
            _copy_file(rootfs, lib)
        _stream_module(rootfs)
        _lua_module(rootfs)
        etc = rootfs / "etc/nginx"
        (etc / "conf.d").mkdir(parents=True)
        shutil.copy2("/etc/nginx/mime.types", etc / "mime.types")
        shutil.copy2(conf / "nginx.conf", etc / "nginx.conf")
        shutil.copy2(conf / "default.conf", etc / "conf.d/default.conf")
        shutil.copy2(conf / "docker-entrypoint.sh", rootfs / "docker-entrypoint.sh")
        (rootfs / "docker-entrypoint.sh").chmod(0o755)
        (rootfs / "docker-entrypoint.d").mkdir()
        html = rootfs / "usr/share/nginx/html"
        html.mkdir(parents=True)
        shutil.copy2(conf / "index.html", html / "index.html")
        # Debian's binary has /var/lib/nginx/* temp paths compiled in (nginx:alpine uses
        # /var/cache/nginx): both exist so either config style works.
        for d in ("var/cache/nginx", "var/lib/nginx", "var/log/nginx", "usr/lib/nginx/modules", "run/lock"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        # Like nginx:alpine: logs go to the container's stdout/stderr.
        (rootfs / "var/log/nginx/access.log").symlink_to("/dev/stdout")
        (rootfs / "var/log/nginx/error.log").symlink_to("/dev/stderr")

    layer = cached_layer("nginx-" + _digest_files(inputs), populate)
    return assemble(
        "swarmgate/nginx:lab",
        [layer],
        {
            "Env": [PATH_ENV, "NGINX_VERSION=" + _nginx_version()],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "ExposedPorts": {"80/tcp": {}},
            "StopSignal": "SIGQUIT",
            "WorkingDir": "/",
        },
    )


def _nginx_version() -> str:
    out = run(["/usr/sbin/nginx", "-v"]).stderr
    return out.strip().split("/")[-1].split()[0]


def demo_image() -> Image:
    src = ASSETS / "demo.c"

    def populate(rootfs: Path) -> None:
        _base(rootfs)
        run(["gcc", "-static", "-O2", "-Wall", "-o", rootfs / "demo", src])

    layer = cached_layer("demo-" + _digest_files([src, BUSYBOX, ASSETS / "wget.sh", Path(__file__)]), populate)
    return assemble(
        "swarmgate/demo:lab",
        [layer],
        {
            "Env": [PATH_ENV, "PORT=8080"],
            "Cmd": ["/demo"],
            "ExposedPorts": {"8080/tcp": {}},
            "StopSignal": "SIGTERM",
            "WorkingDir": "/",
        },
    )


PYTHON = Path("/usr/bin/python3.11")
NGINX = Path("/usr/sbin/nginx")
OPENSSL = Path("/usr/bin/openssl")
OPENSSL_CNF = Path("/usr/lib/ssl/openssl.cnf")
PYLIB = Path("/usr/lib/python3.11")
SITE = "/opt/swarmgate/site"
# Parts of the stdlib an operator never uses; dropping them keeps the image small.
PYLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "__pycache__",
    "config-3.11-x86_64-linux-gnu",
}


def _operator_sources() -> list[Path]:
    files = [REPO / "pyproject.toml"]
    for p in (REPO / "swarmgate").rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"):
            files.append(p)
    return files


def operator_source_hash() -> str:
    return _digest_files(_operator_sources())


def operator_image() -> Image:
    """Four layers: Python runtime (rarely changes), nginx and openssl for the operator's `nginx -t`,
    dependencies (change with pyproject's list), the swarmgate package (changes with every edit) --
    a code change rebuilds only the last one."""

    def runtime(rootfs: Path) -> None:
        _base(rootfs)
        _copy_file(rootfs, PYTHON)
        (rootfs / "usr/bin/python3").symlink_to("python3.11")
        (rootfs / "usr/bin/python").symlink_to("python3.11")
        shutil.copytree(
            PYLIB,
            rootfs / PYLIB.relative_to("/"),
            symlinks=False,
            ignore=lambda d, names: [n for n in names if n in PYLIB_SKIP or n.endswith(".pyc")],
            ignore_dangling_symlinks=True,
        )
        for lib in _libraries([PYTHON, *(PYLIB / "lib-dynload").glob("*.so")]):
            _copy_file(rootfs, lib)

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]

    def dependencies(rootfs: Path) -> None:
        site = rootfs / SITE.lstrip("/")
        _pip(["install", "--quiet", "--no-compile", "--target", str(site), *deps])
        # Compiled wheels (pydantic-core, charset-normalizer) need system libraries such as
        # libgcc_s that python itself does not link: ship what ldd lists for them.
        for lib in _libraries(site.rglob("*.so")):
            if not str(lib).startswith(str(rootfs)):
                _copy_file(rootfs, lib)

    def package(rootfs: Path) -> None:
        # A real (non-editable) install of the working tree, without its dependencies (layer 2).
        # A fixed source path: pip records it (direct_url.json), and the layer must be reproducible.
        # Only what the package build reads is copied (not .git, .venv, .lab, tests...).
        src = CACHE_DIR / "operator-src"
        shutil.rmtree(src, ignore_errors=True)
        try:
            src.mkdir(parents=True)
            for name in ("pyproject.toml", "README.md", "LICENSE"):
                if (REPO / name).exists():
                    shutil.copy2(REPO / name, src / name)
            shutil.copytree(
                REPO / "swarmgate", src / "swarmgate", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
            site = str(rootfs / SITE.lstrip("/"))
            _pip(["install", "--quiet", "--no-compile", "--no-deps", "--target", site, str(src)])
        finally:
            shutil.rmtree(src, ignore_errors=True)
        for junk in (rootfs / SITE.lstrip("/")).rglob("__pycache__"):
            shutil.rmtree(junk, ignore_errors=True)

    def nginx_check(rootfs: Path) -> None:
        # The operator runs `nginx -t` on every config before it publishes it (renderers/validate.py),
        # and `openssl` once to make the throwaway TLS files that check uses. Debian's nginx has
        # /var/lib/nginx/* temp paths compiled in, which `nginx -t` creates as root.
        for binary in (NGINX, OPENSSL):
            _copy_file(rootfs, binary)
        for lib in _libraries([NGINX, OPENSSL]):
            _copy_file(rootfs, lib)
        _copy_file(rootfs, OPENSSL_CNF)
        for d in ("var/lib/nginx", "var/log/nginx", "usr/lib/nginx/modules", "etc/nginx"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        _stream_module(rootfs)
        _lua_module(rootfs)  # LuaBalancer's configs need it for that `nginx -t` too

    layers = [
        cached_layer("pyruntime-" + _digest_files([PYTHON, BUSYBOX, ASSETS / "wget.sh", Path(__file__)]), runtime),
        cached_layer("opnginx-" + _digest_files([NGINX, OPENSSL, STREAM_MODULE, *LUA_MODULES, Path(__file__)]),
                     nginx_check),
        cached_layer("pydeps-" + _digest_files([Path(__file__)], extra=repr(sorted(deps))), dependencies),
        cached_layer("swarmgate-" + operator_source_hash(), package),
    ]
    return assemble(
        "swarmgate/operator:lab",
        layers,
        {
            "Env": [PATH_ENV, f"PYTHONPATH={SITE}", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"],
            "Entrypoint": ["/usr/bin/python3.11", "-m", "swarmgate"],
            "ExposedPorts": {"8080/tcp": {}},
            "StopSignal": "SIGTERM",
            "WorkingDir": "/",
        },
    )


def _pip(args: list[str]) -> None:
    pip = REPO / ".venv/bin/pip"
    cmd = [str(pip)] if pip.exists() else [sys.executable, "-m", "pip"]
    env = os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:  # only then is pip's (noisy) build output worth showing
        raise RuntimeError(f"pip {' '.join(args[:2])} failed:\n{proc.stdout}{proc.stderr}")


# ---------------------------------------------------------------- distribution to nodes


def build_all() -> list[Image]:
    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda f: f(), (nginx_image, demo_image, operator_image)))


def ensure_on_nodes(images: list[Image], socks: dict[str, Path]) -> int:
    """Loads every image whose ID differs on a node; all nodes in parallel. Returns loads done."""

    def one(node: str) -> int:
        loaded = 0
        for img in images:
            have = docker(socks[node], "image", "inspect", "-f", "{{.Id}}", img.name, check=False)
            if have != img.image_id:
                docker(socks[node], "load", "-q", "-i", str(img.archive), timeout=300)
                loaded += 1
        return loaded

    with ThreadPoolExecutor(len(socks)) as pool:
        total = sum(pool.map(one, socks))
    if total:
        log(f"loaded {total} image archive(s) across {len(socks)} node(s)")
    return total
