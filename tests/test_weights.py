"""Tests for weights resolution: order, verification, atomic download, locking, offline errors.

A loopback HTTP server on 127.0.0.1 serves a small ``torch.save`` file; nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lightning_ganeval import weights
from lightning_ganeval.weights import (
    INCEPTION_FILENAME,
    REFERENCE_HASH_PREFIX,
    WEIGHTS_ENV_VAR,
    WeightsError,
    WeightsHashError,
    WeightsNotFoundError,
    file_sha256,
    resolve_weights,
)


def _payload(seed: int) -> bytes:
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.randn(64, 32, generator=torch.Generator().manual_seed(seed))}, buffer)
    return buffer.getvalue()


PAYLOAD = _payload(0)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        body, mode = self.server.payload, self.server.mode
        if mode == "missing":
            self.send_error(404)
            return
        if mode == "corrupt":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        if mode == "truncate":
            return  # HTTP/1.0: the server closes the connection after the handler, short of Content-Length
        if mode == "slow":
            time.sleep(0.3)  # keeps the first download in flight while the other clients arrive
        self.wfile.write(body[half:])

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.payload = PAYLOAD
        self.mode = "good"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/weights/{INCEPTION_FILENAME}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the torch hub cache into tmp_path and forget which digests have warned."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights, "_WARNED_DIGESTS", set())


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def _resolve(server: _Server, cache: Path, **kwargs: object) -> weights.InceptionWeights:
    kwargs.setdefault("sha256", PAYLOAD_SHA256)
    return resolve_weights(url=server.url, cache_dir=cache, progress=False, **kwargs)


def test_constants_name_the_published_file() -> None:
    assert weights.INCEPTION_URL.endswith("/" + INCEPTION_FILENAME)
    assert weights.INCEPTION_URL.startswith("https://github.com/mseitzer/pytorch-fid/releases/download/")
    assert INCEPTION_FILENAME.split("-")[-1] == REFERENCE_HASH_PREFIX + ".pth"
    assert issubclass(WeightsNotFoundError, WeightsError)
    assert issubclass(WeightsHashError, WeightsError)
    assert issubclass(WeightsError, RuntimeError)


@pytest.mark.parametrize("size", [0, 5, weights._CHUNK + 17])
def test_file_sha256_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("pin", [PAYLOAD_SHA256, PAYLOAD_SHA256[:8].upper()])
def test_download_verifies_and_caches(server: _Server, cache: Path, pin: str) -> None:
    result = _resolve(server, cache, sha256=pin)
    assert result.source == "download"
    assert result.is_reference
    assert result.sha256 == PAYLOAD_SHA256
    assert result.path == cache / INCEPTION_FILENAME
    assert result.path.read_bytes() == PAYLOAD
    assert torch.load(result.path, weights_only=True)["fc.weight"].shape == (64, 32)
    assert _files(cache) <= {INCEPTION_FILENAME, INCEPTION_FILENAME + ".lock"}  # no temp litter
    assert server.requests == 1


def test_cache_hit_makes_no_request(server: _Server, cache: Path) -> None:
    first = _resolve(server, cache)
    second = _resolve(server, cache)
    assert (first.source, second.source) == ("download", "cache")
    assert second.sha256 == first.sha256
    assert server.requests == 1


def test_reference_prefix_is_the_default_expectation(
    server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "REFERENCE_HASH_PREFIX", PAYLOAD_SHA256[:8])
    assert _resolve(server, cache, sha256=None).is_reference
    other_prefix = ("1" if PAYLOAD_SHA256[0] == "0" else "0") + PAYLOAD_SHA256[1:8]
    monkeypatch.setattr(weights, "REFERENCE_HASH_PREFIX", other_prefix)
    # The cached file no longer matches: it is re-downloaded, and the download no longer matches either.
    with pytest.warns(UserWarning, match="Re-downloading"), pytest.raises(WeightsHashError):
        _resolve(server, cache, sha256=None)


def test_torch_home_cache_is_used_by_default(server: _Server, tmp_path: Path) -> None:
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / INCEPTION_FILENAME).write_bytes(PAYLOAD)
    result = resolve_weights(sha256=PAYLOAD_SHA256, url=server.url, progress=False)
    assert result.source == "cache"
    assert result.path == checkpoints / INCEPTION_FILENAME
    assert server.requests == 0


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupted_cache_is_replaced_with_a_warning(server: _Server, cache: Path, damage: str) -> None:
    cache.mkdir()
    bad = PAYLOAD[: len(PAYLOAD) // 3] if damage == "truncated" else PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF])
    (cache / INCEPTION_FILENAME).write_bytes(bad)
    with pytest.warns(UserWarning, match="Re-downloading") as record:
        result = _resolve(server, cache)
    message = str(record[0].message)
    assert str(cache / INCEPTION_FILENAME) in message
    assert PAYLOAD_SHA256 in message  # expected
    assert hashlib.sha256(bad).hexdigest() in message  # actual
    assert result.source == "download"
    assert (cache / INCEPTION_FILENAME).read_bytes() == PAYLOAD
    assert server.requests == 1


def test_corrupted_cache_without_url_is_refused(cache: Path) -> None:
    cache.mkdir()
    bad = PAYLOAD[:100]
    (cache / INCEPTION_FILENAME).write_bytes(bad)
    with pytest.raises(WeightsHashError) as info:
        resolve_weights(sha256=PAYLOAD_SHA256, url=None, cache_dir=cache)
    message = str(info.value)
    assert str(cache / INCEPTION_FILENAME) in message
    assert PAYLOAD_SHA256 in message
    assert hashlib.sha256(bad).hexdigest() in message


def test_no_cache_and_no_url_is_not_found(cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="no `url`"):
        resolve_weights(url=None, cache_dir=cache)


def test_truncated_download_leaves_nothing(server: _Server, cache: Path) -> None:
    server.mode = "truncate"
    with pytest.raises(WeightsNotFoundError, match=f"closed after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
        _resolve(server, cache)
    assert _files(cache) <= {INCEPTION_FILENAME + ".lock"}  # neither the final file nor a .partial


@pytest.mark.parametrize("case", ["corrupt-server", "wrong-pin"])
def test_wrong_hash_download_is_refused(server: _Server, cache: Path, case: str) -> None:
    if case == "corrupt-server":
        server.mode = "corrupt"
        expected = PAYLOAD_SHA256
        actual = hashlib.sha256(bytes([PAYLOAD[0] ^ 0xFF]) + PAYLOAD[1:]).hexdigest()
    else:
        expected = hashlib.sha256(b"other").hexdigest()
        actual = PAYLOAD_SHA256
    with pytest.raises(WeightsHashError) as info:
        _resolve(server, cache, sha256=expected)
    message = str(info.value)
    assert expected in message
    assert actual in message
    assert server.url in message
    assert _files(cache) <= {INCEPTION_FILENAME + ".lock"}


def test_resolution_order(server: _Server, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arg_file, env_file = tmp_path / "arg.pth", tmp_path / "env.pth"
    arg_file.write_bytes(_payload(1))
    env_file.write_bytes(_payload(2))
    cache.mkdir()
    (cache / INCEPTION_FILENAME).write_bytes(PAYLOAD)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(env_file))
    # Not pinned: a pin would refuse the explicit files; the cached file is the "reference" instead.
    monkeypatch.setattr(weights, "REFERENCE_HASH_PREFIX", PAYLOAD_SHA256[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both explicit files are non-reference
        by_arg = _resolve(server, cache, path=str(arg_file), sha256=None)
        by_env = _resolve(server, cache, sha256=None)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, "")  # empty counts as unset
    by_cache = _resolve(server, cache, sha256=None)
    assert (by_arg.source, by_arg.path) == ("argument", arg_file)
    assert (by_env.source, by_env.path) == ("environment", env_file)
    assert (by_cache.source, by_cache.path, by_cache.is_reference) == ("cache", cache / INCEPTION_FILENAME, True)
    assert server.requests == 0


def test_explicit_non_reference_file_warns_once_per_digest(tmp_path: Path) -> None:
    files = [tmp_path / "a.pth", tmp_path / "copy-of-a.pth", tmp_path / "b.pth"]
    files[0].write_bytes(_payload(1))
    files[1].write_bytes(_payload(1))
    files[2].write_bytes(_payload(2))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")  # so only our own once-per-digest rule can suppress repeats
        results = [resolve_weights(path) for path in [*files, files[0], files[2]]]
    assert [r.is_reference for r in results] == [False] * 5
    assert len(record) == 2  # one per distinct digest, whatever the path
    assert "not comparable with published ones" in str(record[0].message)
    assert results[0].sha256 in str(record[0].message)


def test_explicit_reference_file_does_not_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "REFERENCE_HASH_PREFIX", PAYLOAD_SHA256[:8])
    (tmp_path / "ref.pth").write_bytes(PAYLOAD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = resolve_weights(tmp_path / "ref.pth")
    assert result.is_reference
    assert result.sha256 == PAYLOAD_SHA256


def test_explicit_file_not_matching_a_pin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(PAYLOAD)
    pin = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(WeightsHashError, match=f"{PAYLOAD_SHA256}, expected sha256 {pin}"):
        resolve_weights(tmp_path / "w.pth", sha256=pin)


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_missing_explicit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    missing = tmp_path / "nowhere" / "weights.pth"
    if source == "environment":
        monkeypatch.setenv(WEIGHTS_ENV_VAR, str(missing))
        with pytest.raises(WeightsNotFoundError, match=WEIGHTS_ENV_VAR) as info:
            resolve_weights()
    else:
        with pytest.raises(WeightsNotFoundError, match="`inception_weights=`") as info:
            resolve_weights(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("bad", ["", "xyz12345", "1234567", "a" * 65])
def test_invalid_pin(bad: str) -> None:
    with pytest.raises(ValueError, match="`sha256` must be"):
        resolve_weights(sha256=bad)


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{INCEPTION_FILENAME}"


def test_offline_error_is_actionable(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(url=closed_port_url, progress=False)
    message = str(info.value)
    target = tmp_path / "torch_home" / "hub" / "checkpoints" / INCEPTION_FILENAME
    for needle in [
        closed_port_url,
        REFERENCE_HASH_PREFIX,
        WEIGHTS_ENV_VAR,
        "inception_weights=",
        "weights=",
        str(target),
    ]:
        assert needle in message
    assert not target.exists()


def test_http_error_is_not_found(server: _Server, cache: Path) -> None:
    server.mode = "missing"
    with pytest.raises(WeightsNotFoundError, match="404"):
        _resolve(server, cache)


def test_concurrent_threads_download_once(server: _Server, cache: Path) -> None:
    server.mode = "slow"
    start = threading.Barrier(4)
    results: list[weights.InceptionWeights] = []

    def worker() -> None:
        start.wait()
        results.append(_resolve(server, cache))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.requests == 1
    assert sorted(r.source for r in results) == ["cache", "cache", "cache", "download"]
    assert {r.sha256 for r in results} == {PAYLOAD_SHA256}


def test_without_fcntl_still_downloads(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fcntl", None)  # makes `import fcntl` raise ImportError, as on Windows
    assert _resolve(server, cache).source == "download"
    assert _files(cache) == {INCEPTION_FILENAME}


_CHILD = """
import sys, time
from pathlib import Path
from lightning_ganeval.weights import resolve_weights
print("ready", flush=True)
while not Path(sys.argv[1]).exists():
    time.sleep(0.01)
print(resolve_weights(url=sys.argv[2], cache_dir=sys.argv[3], sha256=sys.argv[4], progress=False).source, flush=True)
"""


def test_concurrent_processes_download_once(server: _Server, cache: Path, tmp_path: Path) -> None:
    server.mode = "slow"
    go = tmp_path / "go"
    args = [sys.executable, "-c", _CHILD, str(go), server.url, str(cache), PAYLOAD_SHA256]
    children = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        assert [child.stdout.readline().strip() for child in children] == ["ready"] * 3
        go.touch()  # all children start resolving at once
        sources = sorted(child.communicate(timeout=60)[0].strip() for child in children)
    finally:
        for child in children:
            child.kill()
    assert [child.returncode for child in children] == [0, 0, 0]
    assert sources == ["cache", "cache", "download"]
    assert server.requests == 1


@pytest.mark.parametrize("progress", [False, True])
def test_progress_bar_only_when_asked(
    server: _Server, cache: Path, capsys: pytest.CaptureFixture[str], progress: bool
) -> None:
    resolve_weights(sha256=PAYLOAD_SHA256, url=server.url, cache_dir=cache, progress=progress)
    assert ("Inception" in capsys.readouterr().err) is progress


@pytest.mark.parametrize("empty", ["", b""])
def test_empty_path_is_refused(empty: str | bytes) -> None:
    # Path("") is the current directory: an empty --inception-weights= must not silently mean "here".
    with pytest.raises(ValueError, match=r"`inception_weights=`.*empty string"):
        resolve_weights(empty)


def _tiny_spec(url: str | None, sha256: str | None = PAYLOAD_SHA256) -> weights.WeightsSpec:
    return weights.WeightsSpec(
        name="TinyNet", filename="tiny.pth", url=url, sha256=sha256, env_var="TINY_NET_WEIGHTS", argument="`tiny=`"
    )


def _tiny_url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/models/tiny.pth"


def test_inception_spec_is_the_default() -> None:
    spec = weights.INCEPTION_SPEC
    assert (spec.filename, spec.url, spec.sha256, spec.env_var) == (
        INCEPTION_FILENAME,
        weights.INCEPTION_URL,
        REFERENCE_HASH_PREFIX,
        WEIGHTS_ENV_VAR,
    )
    assert weights.InceptionWeights is weights.ResolvedWeights


def test_other_spec_follows_the_same_rules(
    server: _Server, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _tiny_spec(_tiny_url(server))
    downloaded = resolve_weights(spec=spec, cache_dir=cache, progress=True)
    assert (downloaded.source, downloaded.path, downloaded.is_reference) == ("download", cache / "tiny.pth", True)
    assert "TinyNet" in capsys.readouterr().err  # the progress bar names the network
    assert resolve_weights(spec=spec, cache_dir=cache).source == "cache"
    assert server.requests == 1

    # The spec's own environment variable, not Inception's.
    local = tmp_path / "local.pth"
    local.write_bytes(PAYLOAD)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "ignored.pth"))
    monkeypatch.setenv("TINY_NET_WEIGHTS", str(local))
    assert resolve_weights(spec=spec, cache_dir=cache).path == local
    monkeypatch.setenv("TINY_NET_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(
        WeightsNotFoundError, match=r"TinyNet weights file .*\(from the environment variable TINY_NET_WEIGHTS\)"
    ):
        resolve_weights(spec=spec, cache_dir=cache)
    with pytest.raises(WeightsNotFoundError, match=r"TinyNet weights file .*\(from `tiny=`\)"):
        resolve_weights(tmp_path / "missing.pth", spec=spec)
    with pytest.raises(ValueError, match="`tiny=`"):
        resolve_weights("", spec=spec)


def test_other_spec_non_reference_file_warns_with_its_names(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(_payload(5))
    with pytest.warns(UserWarning, match=r"TinyNet weights .*\(from `tiny=`\).*not the reference tiny.pth"):
        result = resolve_weights(tmp_path / "w.pth", spec=_tiny_spec(None))
    assert not result.is_reference


def test_other_spec_offline_message(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(spec=_tiny_spec(closed_port_url.replace(INCEPTION_FILENAME, "tiny.pth")), progress=False)
    message = str(info.value)
    target = tmp_path / "torch_home" / "hub" / "checkpoints" / "tiny.pth"
    for needle in ["TinyNet", "TINY_NET_WEIGHTS=/path/to/tiny.pth", "`tiny=`", PAYLOAD_SHA256, str(target)]:
        assert needle in message
    assert "Inception" not in message
    assert "inception_weights" not in message


def test_spec_without_digest_accepts_any_file(server: _Server, cache: Path, tmp_path: Path) -> None:
    spec = _tiny_spec(_tiny_url(server), sha256=None)
    first = resolve_weights(spec=spec, cache_dir=cache, progress=False)
    second = resolve_weights(spec=spec, cache_dir=cache, progress=False)
    assert (first.source, second.source) == ("download", "cache")
    assert not first.is_reference  # nothing to compare with
    assert not second.is_reference
    assert first.sha256 == PAYLOAD_SHA256
    (tmp_path / "w.pth").write_bytes(_payload(7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not the reference" warning without a reference
        assert not resolve_weights(tmp_path / "w.pth", spec=spec).is_reference
    # A pin still applies.
    with pytest.raises(WeightsHashError):
        resolve_weights(tmp_path / "w.pth", spec=spec, sha256=PAYLOAD_SHA256)


@pytest.mark.parametrize("bad", ["", "ABCDEF12", "1234567", "z" * 8])
def test_spec_digest_is_validated(bad: str) -> None:
    with pytest.raises(ValueError, match=r"WeightsSpec.sha256"):
        _tiny_spec(None, sha256=bad)
