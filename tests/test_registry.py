"""Pull and push against a real registry (Debian's docker-registry, on the
loopback), plain, with basic auth, behind TLS from a test CA, and with token
auth; checked against skopeo where it is installed; and a registry that
misbehaves. Every test's store is its own; a failed pull leaves it as it was."""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

import isolate
from isolate import ImageError
from tests.images import build_image, entry, layer_tar, rootfs_layer, store_snapshot
from tests.registry import Registry, TokenServer, make_ca

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                reason="docker-registry is not installed (apt-get install "
                                       "docker-registry; the README's test command does)")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture(scope="module")
def base(rootfs):
    return rootfs_layer(rootfs)


@pytest.fixture()
def registry(tmp_path):
    r = Registry(str(tmp_path / "registry"))
    yield r
    r.stop()


def _other_store(tmp_path, monkeypatch, name: str):
    monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / name))




def _image(tmp_path, base, name="localhost/reg:1", **kw):
    upper = layer_tar([entry("etc/.wh.group", b""), entry("srv", kind=b"5"),
                       entry("srv/marker", b"pushed\n")])
    [img] = isolate.load(build_image(str(tmp_path / f"{name.replace('/', '_')}.tar"),
                                     [base, upper], name=name, gzip_layers=True, **kw))
    return img


def test_push_then_pull_into_another_store_and_run(store, registry, tmp_path, monkeypatch, base):
    img = _image(tmp_path, base)
    ref = f"{registry.host}/me/tool:1"
    assert isolate.push(img, ref, insecure=True) == img.digest
    # a second push: the registry has every blob, none goes again
    sent = []
    from isolate import _registry
    real = _registry._Registry.put_blob
    monkeypatch.setattr(_registry._Registry, "put_blob",
                        lambda self, path, digest: (sent.append(digest), real(self, path, digest)))
    isolate.push(img, ref, insecure=True)
    assert sent == []
    _other_store(tmp_path, monkeypatch, "store2")
    pulled = isolate.pull(ref, insecure=True)
    assert (pulled.ref, pulled.digest, pulled.id, pulled.layers) == \
        (ref, img.digest, img.id, img.layers)
    r = isolate.run(["sh", "-c", "cat /srv/marker; ls /etc/group 2>&1 || true"], image=pulled,
                    capture_output=True, text=True)
    assert r.stdout.startswith("pushed\n") and "No such file" in r.stdout
    # by digest: untagged, found by it
    by_digest = isolate.pull(f"{registry.host}/me/tool@{img.digest}", insecure=True)
    assert by_digest.ref == ref and by_digest.digest == img.digest
    # the CLI
    cli = [sys.executable, "-m", "isolate"]
    r = subprocess.run([*cli, "pull", "--insecure", ref], capture_output=True, text=True)
    assert r.returncode == 0 and img.digest in r.stdout, r.stderr
    r = subprocess.run([*cli, "push", "--insecure", ref, f"{registry.host}/me/copy:2"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and img.digest in r.stdout, r.stderr


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_what_isolate_pushed_and_the_reverse(store, registry, tmp_path,
                                                          monkeypatch, base):
    img = _image(tmp_path, base)
    ref = f"{registry.host}/me/tool:1"
    isolate.push(img, ref, insecure=True)
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "sha256:" + hashlib.sha256(r.stdout).hexdigest() == img.digest
    # skopeo copies an OCI archive of isolate's into the registry; isolate pulls it
    archive = img.save(tmp_path / "out.tar")
    other = f"{registry.host}/skopeo/copied:1"
    r = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{archive}",
                        f"docker://{other}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _other_store(tmp_path, monkeypatch, "store2")
    pulled = isolate.pull(other, insecure=True)
    assert pulled.layers == img.layers
    r = isolate.run(["cat", "/srv/marker"], image=pulled, capture_output=True, text=True)
    assert r.stdout == "pushed\n"


def test_an_index_gives_this_platforms_image(store, registry, tmp_path, monkeypatch, base):
    import urllib3
    img = _image(tmp_path, base)
    isolate.push(img, f"{registry.host}/me/multi:1", insecure=True)
    with open(f"{img.store}/blobs/sha256/{img.digest[7:]}", "rb") as f:
        manifest = f.read()
    arm = {**json.loads(manifest)}
    arm["annotations"] = {"arch": "arm64"}          # another manifest, the same blobs
    arm_data = json.dumps(arm).encode()
    arm_digest = "sha256:" + hashlib.sha256(arm_data).hexdigest()
    http = urllib3.PoolManager()
    mt = "application/vnd.oci.image.manifest.v1+json"
    r = http.request("PUT", f"http://{registry.host}/v2/me/multi/manifests/{arm_digest}",
                     body=arm_data, headers={"Content-Type": mt})
    assert r.status == 201, r.data
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [
                 {"mediaType": mt, "digest": arm_digest, "size": len(arm_data),
                  "platform": {"os": "linux", "architecture": "arm64"}},
                 {"mediaType": mt, "digest": img.digest, "size": len(manifest),
                  "platform": {"os": "linux", "architecture": "amd64"}}]}
    r = http.request("PUT", f"http://{registry.host}/v2/me/multi/manifests/2",
                     body=json.dumps(index).encode(),
                     headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert r.status == 201, r.data
    _other_store(tmp_path, monkeypatch, "store2")
    pulled = isolate.pull(f"{registry.host}/me/multi:2", insecure=True)
    assert pulled.digest == (img.digest if os.uname().machine == "x86_64" else arm_digest)


def test_basic_auth(store, tmp_path, monkeypatch, base):
    reg = Registry(str(tmp_path / "registry"), htpasswd=("alice", "s3cret"))
    try:
        img = _image(tmp_path, base)
        ref = f"{reg.host}/me/tool:1"
        with pytest.raises(ImageError, match="asks for a user and password"):
            isolate.push(img, ref, insecure=True)
        with pytest.raises(ImageError, match="HTTP 401"):
            isolate.push(img, ref, insecure=True, auth=("alice", "wrong"))
        isolate.push(img, ref, insecure=True, auth=("alice", "s3cret"))
        # docker login's file
        config = tmp_path / "docker"
        config.mkdir()
        (config / "config.json").write_text(json.dumps({"auths": {reg.host: {
            "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        _other_store(tmp_path, monkeypatch, "store2")
        assert isolate.pull(ref, insecure=True).digest == img.digest
    finally:
        reg.stop()


def test_tls_with_the_system_cas(store, tmp_path, monkeypatch, base):
    ca, cert, key = make_ca(str(tmp_path))
    reg = Registry(str(tmp_path / "registry"), tls=(cert, key))
    try:
        img = _image(tmp_path, base)
        ref = f"{reg.host}/me/tool:1"
        with pytest.raises(ImageError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            isolate.push(img, ref)
        monkeypatch.setenv("SSL_CERT_FILE", ca)     # as a CA installed on the system
        isolate.push(img, ref)
        _other_store(tmp_path, monkeypatch, "store2")
        assert isolate.pull(ref).digest == img.digest
    finally:
        reg.stop()


def test_token_auth(store, tmp_path, monkeypatch, base):
    tokens = TokenServer(str(tmp_path), "bob", "pw")
    reg = Registry(str(tmp_path / "registry"), token=tokens)
    try:
        img = _image(tmp_path, base)
        ref = f"{reg.host}/me/tool:1"
        with pytest.raises(ImageError, match="authenticate"):
            isolate.push(img, ref, insecure=True)       # the token server wants a user
        isolate.push(img, ref, insecure=True, auth=("bob", "pw"))
        _other_store(tmp_path, monkeypatch, "store2")
        assert isolate.pull(ref, insecure=True, auth=("bob", "pw")).digest == img.digest
        assert "repository:me/tool:pull,push" in tokens.scopes
        assert tokens.scopes[-1] == "repository:me/tool:pull"
    finally:
        reg.stop()
        tokens.stop()


# -- a registry that is down, or misbehaves ---------------------------------------

def test_a_registry_that_is_down_or_lacks_the_image(store, registry, tmp_path):
    isolate.load(build_image(str(tmp_path / "a.tar"), [layer_tar([entry("a", b"a")])]))
    before = store_snapshot(store)
    with pytest.raises(ImageError) as info:
        isolate.pull(f"{registry.host}/no/such:1", insecure=True)
    assert info.value.step == "fetch manifest" and "404" in str(info.value)
    from tests.registry import free_port
    with pytest.raises(ImageError) as info:
        isolate.pull(f"127.0.0.1:{free_port()}/me/x:1", insecure=True)
    assert info.value.step == "fetch manifest" and "refused" in str(info.value).lower()
    assert store_snapshot(store) == before


class FakeRegistry:
    """A registry that serves what the test says, per path."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                status, headers, body = fake.routes.get(self.path, (404, {}, b"{}"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve_image(self, layer: bytes, *, layer_served: bytes | None = None,
                    manifest_digest: str | None = None) -> None:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
        cd, ld = (f"sha256:{hashlib.sha256(x).hexdigest()}" for x in (config, layer))
        manifest = json.dumps({"schemaVersion": 2,
                               "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": cd, "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                           "digest": ld, "size": len(layer)}]}).encode()
        md = manifest_digest or "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.routes["/v2/me/x/manifests/1"] = (200, {
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Docker-Content-Digest": md}, manifest)
        self.routes[f"/v2/me/x/blobs/{cd}"] = (200, {}, config)
        self.routes[f"/v2/me/x/blobs/{ld}"] = (200, {}, layer if layer_served is None
                                               else layer_served)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _bad_500(fake, layer):
    fake.routes["/v2/me/x/manifests/1"] = (500, {}, b"internal error")


def _garbage(fake, layer):
    fake.routes["/v2/me/x/manifests/1"] = (200, {"Docker-Content-Digest": "sha256:" +
                                                 hashlib.sha256(b"\x00garbage").hexdigest()},
                                           b"\x00garbage")


def _wrong_manifest_digest(fake, layer):
    fake.serve_image(layer, manifest_digest="sha256:" + "1" * 64)


def _tampered_layer(fake, layer):
    fake.serve_image(layer, layer_served=layer[:-1] + b"X")


def _truncated_layer(fake, layer):
    fake.serve_image(layer, layer_served=layer[:len(layer) // 2])


def _unsupported(fake, layer):
    fake.routes["/v2/me/x/manifests/1"] = (200, {}, json.dumps({
        "schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"
    }).encode())


@pytest.mark.parametrize("case,step", [
    (_bad_500, "fetch manifest"), (_garbage, "fetch manifest"),
    (_wrong_manifest_digest, "verify manifest"), (_tampered_layer, "verify blob"),
    (_truncated_layer, "verify blob"), (_unsupported, "fetch manifest")])
def test_a_misbehaving_registry_changes_nothing(store, tmp_path, case, step):
    isolate.load(build_image(str(tmp_path / "a.tar"), [layer_tar([entry("a", b"a")])]))
    before = store_snapshot(store)
    fake = FakeRegistry()
    try:
        case(fake, layer_tar([entry("f", os.urandom(4096))]))
        with pytest.raises(ImageError) as info:
            isolate.pull(f"{fake.host}/me/x:1", insecure=True)
        assert info.value.step == step, info.value
        assert info.value.ref == f"{fake.host}/me/x:1"
    finally:
        fake.stop()
    assert store_snapshot(store) == before


def test_many_layers_fetched_at_once(store, registry, tmp_path, monkeypatch, base):
    layers = [base] + [layer_tar([entry(f"l{i}", os.urandom(300_000))]) for i in range(8)]
    [img] = isolate.load(build_image(str(tmp_path / "many.tar"), layers, name="localhost/many:1",
                                     gzip_layers=True))
    ref = f"{registry.host}/me/many:1"
    isolate.push(img, ref, insecure=True)
    _other_store(tmp_path, monkeypatch, "store2")
    pulled = isolate.pull(ref, insecure=True)
    assert pulled.layers == img.layers
    r = isolate.run(["sh", "-c", "ls /l* | wc -l"], image=pulled, capture_output=True, text=True)
    assert r.stdout.strip() == "8"


def test_credentials_go_to_the_registry_only(store, tmp_path, base):
    """A registry whose upload Location names another host: the push's PUT
    there carries no Authorization (the user's password, else)."""
    seen: list[str | None] = []

    class Other(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_PUT(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    where = f"http://127.0.0.1:{other.server_address[1]}/steal"

    class Registry(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status, headers=()):
            if self.headers.get("Authorization") is None:
                status, headers = 401, [("WWW-Authenticate", 'Basic realm="r"')]
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self):
            self._answer(404)

        def do_POST(self):
            self._answer(202, [("Location", where)])

        def do_PUT(self):
            self._answer(201)

    reg = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=reg.serve_forever, daemon=True).start()
    try:
        img = isolate.load(build_image(str(tmp_path / "a.tar"), [layer_tar([entry("a", b"a")])],
                                       name="localhost/a:1"))[0]
        isolate.push(img, f"127.0.0.1:{reg.server_address[1]}/me/a:1", insecure=True,
                     auth=("alice", "s3cret"))
        assert seen and seen == [None] * len(seen)
    finally:
        for s in (reg, other):
            s.shutdown()
            s.server_close()


def test_a_giant_manifest_is_not_read_whole(store, tmp_path):
    fake = FakeRegistry()
    try:
        fake.routes["/v2/me/x/manifests/1"] = (200, {}, b"{" + b" " * (8 << 20) + b"}")
        with pytest.raises(ImageError, match="more than"):
            isolate.pull(f"{fake.host}/me/x:1", insecure=True)
    finally:
        fake.stop()
