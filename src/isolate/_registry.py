"""The OCI distribution API (registry v2): pull and push of images.

    img = isolate.pull("localhost:5000/library/busybox:1", insecure=True)
    isolate.push(img, "localhost:5000/me/tool:1", insecure=True)

HTTP goes through urllib3 (TLS with the system's CAs, or SSL_CERT_FILE;
insecure=True speaks plain HTTP, for a registry on the loopback). Auth: the
WWW-Authenticate challenge of the registry, Bearer (a token from its realm, as
Docker Hub and ghcr.io do it) or Basic, with the credentials given
(auth=(user, password)) or those of ~/.docker/config.json for that host.

A pull verifies everything against the digests that name it while it streams
(a manifest asked for by tag against the registry's Docker-Content-Digest),
fetches the layers in parallel, and then unpacks and lists the image as a
load does (see _images): a pull that fails leaves the store as it was.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ._images import (_DIGEST, _INDEXES, _MANIFESTS, Image, _Load, _platform_ok, _store,
                      check_config, get_image, parse_ref)
from .errors import ImageError

ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
_PARALLEL = 4
_CHUNK = 1 << 20


def _split(full: str) -> tuple[str, str, str]:
    """(registry host, repository, tag or digest) of a normalised reference."""
    name, at, digest = full.partition("@")
    domain, _, rest = name.partition("/")
    repo, colon, tag = rest.rpartition(":")
    if not colon:
        repo, tag = rest, ""
    return domain, repo, digest if at else tag


def _docker_credentials(host: str) -> tuple[str, str] | None:
    path = os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"),
                        "config.json")
    try:
        with open(path) as f:
            auths = json.load(f).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    keys = [host, f"https://{host}", f"http://{host}"]
    if host == "registry-1.docker.io":
        keys += ["docker.io", "https://index.docker.io/v1/", "index.docker.io"]
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeError):
                continue
            return user, password
    return None


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="...",scope="..."' -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class _Registry:
    def __init__(self, host: str, repo: str, ref: str, *, insecure: bool,
                 auth: tuple[str, str] | None, push: bool = False):
        try:
            import urllib3
        except ImportError:     # pragma: no cover - a dependency
            raise ImageError("pull and push need urllib3 (pip install urllib3)", ref=ref,
                             step="connect") from None
        self.urllib3 = urllib3
        self.ref = ref
        self.repo = repo
        self.host = "registry-1.docker.io" if host == "docker.io" else host
        self.base = f"{'http' if insecure else 'https'}://{self.host}"
        self.http = urllib3.PoolManager(maxsize=_PARALLEL + 1, retries=urllib3.Retry(
            total=2, connect=2, read=0, redirect=5, status=0, allowed_methods=None))
        self.creds = auth if auth is not None else _docker_credentials(self.host)
        self.scope = f"repository:{repo}:{'pull,push' if push else 'pull'}"
        self.authorization: str | None = None
        self.lock = threading.Lock()

    def _same_origin(self, url: str) -> bool:
        a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.base)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)

    def request(self, method: str, url: str, *, step: str, headers: dict[str, str] | None = None,
                body: Any = None, stream: bool = False, ok: tuple[int, ...] = (200,)) -> Any:
        """The response (its body not read: the caller reads what it needs,
        bounded, and releases it). Credentials go only to the registry itself."""
        url = urllib.parse.urljoin(self.base + "/", url)
        for attempt in (0, 1):
            h = dict(headers or {})
            if self.authorization and self._same_origin(url):
                h["Authorization"] = self.authorization
            try:
                r = self.http.request(method, url, headers=h, body=body, preload_content=False,
                                      redirect=True, timeout=self.urllib3.Timeout(connect=10,
                                                                                  read=60))
            except self.urllib3.exceptions.HTTPError as e:
                raise ImageError(f"{method} {url}: {_reason(e)}", ref=self.ref,
                                 step=step) from None
            except ValueError as e:         # a URL urllib3 cannot take
                raise ImageError(f"{method} {url}: {e}", ref=self.ref, step=step) from None
            if r.status == 401 and attempt == 0 and self._authenticate(r, step):
                if hasattr(body, "seek"):
                    body.seek(0)
                continue
            if r.status not in ok:
                text = _read(r, 300, self.ref, step, cut=True).decode("utf-8", "replace").strip()
                raise ImageError(f"{method} {url}: HTTP {r.status}" + (f": {text}" if text else ""),
                                 ref=self.ref, step=step)
            return r
        raise AssertionError("unreachable")

    def _authenticate(self, r: Any, step: str) -> bool:
        scheme, params = _challenge(r.headers.get("WWW-Authenticate", ""))
        _read(r, 0, self.ref, step, cut=True)
        with self.lock:
            if scheme == "basic":
                if self.creds is None:
                    raise ImageError("the registry asks for a user and password (auth=, or "
                                     "docker login's ~/.docker/config.json)", ref=self.ref,
                                     step=step)
                self.authorization = "Basic " + base64.b64encode(
                    f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
                return True
            if scheme != "bearer" or "realm" not in params:
                return False
            realm = urllib.parse.urlsplit(params["realm"])
            if realm.scheme not in ("http", "https") or (
                    realm.scheme == "http" and self.base.startswith("https:")):
                raise ImageError(f"the registry's token realm {params['realm']!r} is not "
                                 "https: credentials would go in the clear", ref=self.ref,
                                 step="authenticate")
            fields = {"service": params.get("service", ""), "scope": self.scope}
            headers = {}
            if self.creds is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(
                    f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            try:
                t = self.http.request("GET", params["realm"], fields=fields, headers=headers,
                                      preload_content=False,
                                      timeout=self.urllib3.Timeout(connect=10, read=30))
            except (self.urllib3.exceptions.HTTPError, ValueError) as e:
                raise ImageError(f"token from {params['realm']}: {_reason(e)}", ref=self.ref,
                                 step="authenticate") from None
            data = _read(t, 1 << 20, self.ref, "authenticate")
            if t.status != 200:
                raise ImageError(f"token from {params['realm']}: HTTP {t.status}", ref=self.ref,
                                 step="authenticate")
            try:
                answer = json.loads(data)
                token = answer.get("token") or answer.get("access_token")
            except (ValueError, AttributeError, RecursionError):
                token = None
            if not isinstance(token, str) or not token:
                raise ImageError(f"token from {params['realm']}: no token in its answer",
                                 ref=self.ref, step="authenticate")
            self.authorization = f"Bearer {token}"
            return True

    def close(self) -> None:
        self.http.clear()       # no connection outlives the call

    # -- pull -------------------------------------------------------------

    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, verified."""
        r = self.request("GET", f"/v2/{self.repo}/manifests/{reference}", step="fetch manifest",
                         headers={"Accept": ACCEPT})
        data = _read(r, 4 << 20, self.ref, "fetch manifest")
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        want = reference if reference.startswith("sha256:") else \
            r.headers.get("Docker-Content-Digest") or got
        if got != want:
            raise ImageError(f"the manifest's digest is {got}, not {want}", ref=self.ref,
                             step="verify manifest")
        try:
            obj = json.loads(data)
            mt = obj.get("mediaType") or r.headers.get("Content-Type", "").split(";")[0]
        except (ValueError, AttributeError, RecursionError):
            raise ImageError("the manifest is not JSON", ref=self.ref,
                             step="fetch manifest") from None
        return data, mt, got

    def blob(self, ld: _Load, digest: str, size: int | None,
             progress: Callable[[int], None] | None) -> None:
        if ld.has_blob(digest):
            return
        r = self.request("GET", f"/v2/{self.repo}/blobs/{digest}", step="fetch blob",
                         stream=True)
        done = False
        try:
            ld.add_blob(_Counting(r, progress), digest, size, self.ref)
            done = True
        except self.urllib3.exceptions.HTTPError as e:
            raise ImageError(f"blob {digest}: {_reason(e)}", ref=self.ref,
                             step="fetch blob") from None
        finally:
            if not done:
                r.close()
            r.release_conn()

    # -- push -------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{self.repo}/blobs/{digest}", step="push blob",
                         ok=(200, 404))
        _read(r, 0, self.ref, "push blob", cut=True)
        return r.status == 200

    def put_blob(self, path: str, digest: str) -> None:
        r = self.request("POST", f"/v2/{self.repo}/blobs/uploads/", step="push blob",
                         ok=(202,))
        location = r.headers.get("Location", "")
        _read(r, 0, self.ref, "push blob", cut=True)
        if not location:
            raise ImageError("the registry gave no upload location", ref=self.ref,
                             step="push blob")
        location = urllib.parse.urljoin(f"{self.base}/v2/{self.repo}/blobs/uploads/", location)
        sep = "&" if "?" in location else "?"
        with open(path, "rb") as f:
            r = self.request("PUT", f"{location}{sep}digest={digest}", step="push blob",
                             headers={"Content-Type": "application/octet-stream",
                                      "Content-Length": str(os.path.getsize(path))},
                             body=f, ok=(201,))
        _read(r, 0, self.ref, "push blob", cut=True)

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        r = self.request("PUT", f"/v2/{self.repo}/manifests/{reference}", step="push manifest",
                         headers={"Content-Type": media_type}, body=data, ok=(201,))
        _read(r, 0, self.ref, "push manifest", cut=True)


class _Counting(io.RawIOBase):
    """A response body as a reader, telling progress how many bytes came."""

    def __init__(self, r: Any, progress: Callable[[int], None] | None):
        self.r, self.progress = r, progress

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.r.read(n if n and n > 0 else _CHUNK)
        if self.progress is not None and data:
            self.progress(len(data))
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _read(r: Any, limit: int, ref: str, step: str, cut: bool = False) -> bytes:
    """At most limit bytes of a response's body (more: an ImageError, or
    with cut, the first limit bytes); the connection is released."""
    data = b""
    try:
        data = r.read(limit + 1)
    except Exception as e:      # urllib3's, on a body that breaks off
        if not cut:
            raise ImageError(f"reading the answer: {_reason(e)}", ref=ref, step=step) from None
    finally:
        if len(data) > limit or not r.isclosed():
            r.close()       # what is left unread is not drained: the connection goes
        r.release_conn()
    if len(data) > limit:
        if not cut:
            raise ImageError(f"an answer of more than {limit} bytes", ref=ref, step=step)
        data = data[:limit]
    return data


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    return str(reason or e)


class _Progress:
    """A one-line progress bar on stderr, when it is a terminal."""

    def __init__(self, what: str, total: int):
        import sys
        self.on = sys.stderr.isatty()
        self.what, self.total, self.done = what, max(total, 1), 0
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        if not self.on:
            return
        import sys
        with self.lock:
            self.done += n
            width = 30
            filled = min(width, width * self.done // self.total)
            sys.stderr.write(f"\r{self.what} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB")
            sys.stderr.flush()

    def end(self) -> None:
        if self.on:
            import sys
            sys.stderr.write("\n")


def pull(ref: str, *, insecure: bool = False, auth: tuple[str, str] | None = None) -> Image:
    """Pull an image from its registry into the store (see the module's
    docstring); returns it. ImageError names the reference and the step."""
    full = parse_ref(ref)
    host, repo, reference = _split(full)
    s = _store()
    s.sweep_tmp()
    reg = _Registry(host, repo, ref, insecure=insecure, auth=auth)
    ld = _Load(s, ref)
    try:
        data, mt, digest = reg.manifest(reference)
        if mt in _INDEXES:
            try:
                picked = [m for m in json.loads(data).get("manifests") or ()
                          if _platform_ok(m.get("platform"))]
            except (ValueError, AttributeError, TypeError):
                picked = []
            if not picked or not _DIGEST.fullmatch(str(picked[0].get("digest"))):
                raise ImageError("no manifest for this platform in the index", ref=ref,
                                 step="fetch manifest")
            data, mt, digest = reg.manifest(picked[0]["digest"])
        if mt not in _MANIFESTS:
            raise ImageError(f"unsupported manifest media type {mt!r}", ref=ref,
                             step="fetch manifest")
        ld.add_blob(io.BytesIO(data), digest, len(data), ref)
        try:
            manifest = json.loads(data)
            config_desc = manifest["config"]
            layers = list(manifest["layers"])
            for d in [config_desc, *layers]:
                if not _DIGEST.fullmatch(str(d.get("digest"))):
                    raise ImageError(f"unsupported digest {d.get('digest')!r}", ref=ref,
                                     step="fetch manifest")
        except (KeyError, TypeError, AttributeError, ValueError):
            raise ImageError("a malformed manifest", ref=ref, step="fetch manifest") from None
        reg.blob(ld, config_desc["digest"], config_desc.get("size"), None)
        with open(ld.blob_path(config_desc["digest"]), "rb") as f:
            try:
                config = json.loads(f.read(16 << 20))
            except (ValueError, RecursionError):
                raise ImageError("a malformed image config", ref=ref,
                                 step="fetch config") from None
            check_config(config, ref, "fetch config")
            diff_ids = list(config["rootfs"]["diff_ids"])
        if not layers or len(layers) != len(diff_ids):
            raise ImageError(f"{len(layers)} layers in the manifest, {len(diff_ids)} diff ids "
                             "in the config", ref=ref, step="fetch manifest")
        bar = _Progress(f"pull {ref}", sum(int(x.get("size") or 0) for x in layers))
        with ThreadPoolExecutor(_PARALLEL) as pool:
            futures = [pool.submit(reg.blob, ld, x["digest"], x.get("size"), bar)
                       for x in layers]
            for fut in futures:
                fut.result()
        bar.end()
        for x, diff_id in zip(layers, diff_ids):
            ld.unpack(x["digest"], diff_id, ref)
        base = full.partition("@")[0]
        tagged = ":" in base.rpartition("/")[2]     # by digest alone: untagged, as docker
        key = base if tagged else digest
        ld.commit({key: digest})
        return get_image(key if key != digest else full)    # by digest: under its name, if any
    except OSError as e:
        raise ImageError(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
                         ref=ref, step="pull") from None
    except ImageError:
        raise
    except Exception as e:      # what a registry's JSON made of the parsers
        raise ImageError(f"{type(e).__name__}: {e}", ref=ref, step="pull") from None
    finally:
        ld.close()
        reg.close()


def push(image: str | Image, ref: str | None = None, *, insecure: bool = False,
         auth: tuple[str, str] | None = None) -> str:
    """Push an image of the store to a registry, as ref (default: its own
    reference); blobs the registry has are skipped. Returns the manifest's
    digest."""
    img = get_image(image)
    full = parse_ref(ref or img.ref or "")
    host, repo, reference = _split(full)
    if reference.startswith("sha256:") and reference != img.digest:
        raise ImageError("push by digest needs the image's own digest", ref=full, step="push")
    s = _store()
    reg = _Registry(host, repo, full, insecure=insecure, auth=auth, push=True)
    manifest = s.read_json(img.digest, full)
    blobs = [x["digest"] for x in manifest["layers"]] + [manifest["config"]["digest"]]
    total = sum(os.path.getsize(s.blob(d)) for d in blobs)
    bar = _Progress(f"push {full}", total)

    def one(digest: str) -> None:
        if not reg.has_blob(digest):
            reg.put_blob(s.blob(digest), digest)
        bar(os.path.getsize(s.blob(digest)))
    try:
        with ThreadPoolExecutor(_PARALLEL) as pool:
            for fut in [pool.submit(one, d) for d in dict.fromkeys(blobs)]:
                fut.result()
        bar.end()
        with open(s.blob(img.digest), "rb") as f:
            data = f.read()
        reg.put_manifest(reference, data, manifest.get("mediaType") or
                         "application/vnd.oci.image.manifest.v1+json")
    finally:
        reg.close()
    return img.digest
