"""Concurrent processes sharing a download cache or an output folder (issue 9: file locks).

Every test starts real OS processes (not threads) that race for the same path, released
together by a start file so they collide, and checks what a user would find afterwards:
one complete result, no half-written or interleaved files, no stray temporaries.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from atlasreg.errors import OutputExistsError
from atlasreg.io.locks import LockTimeoutError, lock_file_for, locked

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.pop("ATLASREG_DATA", None)  # never the mirror here: the cache is what is shared
    env.update({"ATLASREG_LOCK_DIR": str(tmp_path / "locks"), "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _spawn(script: str, tmp_path: Path, n: int, args=(), **env) -> list[subprocess.Popen]:
    """Start ``n`` copies of ``script``; each waits for <tmp>/go after writing <tmp>/ready-<i>."""
    f = tmp_path / "worker.py"
    f.write_text(textwrap.dedent("""
        import sys, time, pathlib
        base = pathlib.Path(sys.argv[1]); i = int(sys.argv[2])
        (base / f"ready-{i}").touch()
        while not (base / "go").exists():
            time.sleep(0.005)
    """) + textwrap.dedent(script))
    procs = [subprocess.Popen([sys.executable, str(f), str(tmp_path), str(i), *map(str, args)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(tmp_path, **env)) for i in range(n)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{i}").exists() for i in range(n)):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    return procs


def _finish(procs, timeout=90) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        out.append((p.returncode, so, se))
    return out


# -- the lock itself --------------------------------------------------------------------------------------
def test_locked_serialises_read_modify_write_across_processes(tmp_path):
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    n_each = 15
    procs = _spawn("""
        from atlasreg.io.locks import locked
        c = base / "counter.txt"
        for _ in range(int(sys.argv[3])):
            with locked(c):
                v = int(c.read_text())
                time.sleep(0.004)  # widen the window a lost update needs
                c.write_text(str(v + 1))
    """, tmp_path, 3, args=[n_each])
    for rc, so, se in _finish(procs):
        assert rc == 0, se
    assert int(counter.read_text()) == 3 * n_each  # no increment lost


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    target = tmp_path / "entry.bin"
    (p,) = _spawn("""
        from atlasreg.io.locks import locked
        with locked(base / "entry.bin", beside=True):
            (base / "held").touch()
            time.sleep(600)
    """, tmp_path, 1)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "held").exists():
            assert time.monotonic() < deadline and p.poll() is None, p.communicate()
            time.sleep(0.01)
        with pytest.raises(LockTimeoutError) as ei:
            with locked(target, timeout=0.3, beside=True):
                pass
        assert str(lock_file_for(target, beside=True)) in str(ei.value) and str(target) in str(ei.value)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    t0 = time.monotonic()
    with locked(target, timeout=10, beside=True) as lf:  # the dead holder's lock is gone at once
        assert lf == tmp_path / ".entry.bin.lock"
    assert time.monotonic() - t0 < 5


def test_locked_is_reentrant_and_reports_unwritable_lock_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASREG_LOCK_DIR", str(tmp_path / "locks"))
    out = tmp_path / "result"
    with locked(out) as a:
        with locked(out, timeout=0.1) as b:  # same thread: no self-deadlock
            assert a == b and a.parent == tmp_path / "locks"
    assert not any(p.name.endswith(".lock") for p in tmp_path.iterdir())  # nothing beside outputs
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        from atlasreg.errors import AtlasregError

        with pytest.raises(AtlasregError, match="lock"):
            with locked(ro / "x", beside=True):
                pass


# -- the download cache ------------------------------------------------------------------------------------
PAYLOAD = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB of real bytes


class _Server:
    """A slow local HTTP server (the 'public original'); counts the GETs it answers."""

    def __init__(self, chunk_delay: float = 0.04):
        gets = self.gets = []
        sent = self.sent = []

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                try:
                    for i in range(0, len(PAYLOAD), 8192):
                        self.wfile.write(PAYLOAD[i:i + 8192])
                        self.wfile.flush()
                        sent.append(i)
                        time.sleep(chunk_delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/payload.bin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _manifest(tmp_path: Path, url: str) -> Path:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "locktest.yaml").write_text(textwrap.dedent(f"""
        name: locktest
        kind: template
        title: lock test payload
        licence: CC0
        files:
          blob:
            original:
              url: {url}
              sha256: {hashlib.sha256(PAYLOAD).hexdigest()}
    """))
    return d


FETCH = """
    from atlasreg import data
    print(data.fetch("locktest", download=True)["blob"])
"""


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_concurrent_fetches_download_once_and_agree(tmp_path, server):
    cache = tmp_path / "cache"
    procs = _spawn(FETCH, tmp_path, 3, ATLASREG_MANIFESTS=_manifest(tmp_path, server.url), ATLASREG_CACHE=cache)
    res = _finish(procs)
    for rc, so, se in res:
        assert rc == 0, se
    paths = {so.strip() for _, so, _ in res}
    assert len(paths) == 1
    got = Path(paths.pop())
    assert got.parent == cache and got.read_bytes() == PAYLOAD
    assert len(server.gets) == 1  # the others waited for the lock and found the finished entry
    # Only the entry and its lock file: no pooch temporaries left over.
    assert _cache_files(cache) == sorted([got.name, f".{got.name}.lock"])


def test_fetch_killed_mid_download_leaves_no_entry_and_next_fetch_completes(tmp_path, server):
    cache = tmp_path / "cache"
    man = _manifest(tmp_path, server.url)
    (p,) = _spawn(FETCH, tmp_path, 1, ATLASREG_MANIFESTS=man, ATLASREG_CACHE=cache)
    deadline = time.monotonic() + 60
    while len(server.sent) < 3:  # a few chunks are on disk in pooch's temporary file
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    entry = cache / f"locktest__blob__payload.bin"
    assert not entry.exists()  # a half download never sits under the entry's name
    (tmp_path / "go").unlink()
    for f in tmp_path.glob("ready-*"):
        f.unlink()
    (q,) = _spawn(FETCH, tmp_path, 1, ATLASREG_MANIFESTS=man, ATLASREG_CACHE=cache)
    ((rc, so, se),) = _finish([q])
    assert rc == 0, se
    assert Path(so.strip()) == entry and entry.read_bytes() == PAYLOAD
    assert len(server.gets) == 2


# -- output folders ---------------------------------------------------------------------------------------
WRITE_FOLDER = """
    import os
    from atlasreg.errors import OutputExistsError
    from atlasreg.io.atomic import atomic_path
    force = sys.argv[3] == "1"
    _replace = os.replace

    def slow_replace(a, b):  # a slow file system: widen the window between the exists-check and the rename
        time.sleep(0.15)
        _replace(a, b)

    os.replace = slow_replace
    try:
        with atomic_path(base / "result", force=force) as tmp:
            tmp.mkdir()
            for k in range(5):  # a multi-file result, each file naming its writer
                (tmp / f"part{k}.txt").write_text(f"writer {i} part {k}\\n" * 200)
                time.sleep(0.01)
    except OutputExistsError as exc:
        print("EXISTS", exc)
        sys.exit(4)
"""


def _check_result(folder: Path) -> int:
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"part{k}.txt" for k in range(5)]
    writers = set()
    for k in range(5):
        lines = set((folder / f"part{k}.txt").read_text().splitlines())
        assert len(lines) == 1
        w, part = lines.pop().split(" part ")
        assert part == str(k)
        writers.add(w)
    assert len(writers) == 1, f"result mixes writers {writers}"
    return int(writers.pop().split()[1])


@pytest.mark.parametrize("force", [False, True])
def test_concurrent_writers_of_one_output_folder(tmp_path, force):
    procs = _spawn(WRITE_FOLDER, tmp_path, 3, args=[int(force)])
    res = _finish(procs)
    codes = sorted(rc for rc, _, _ in res)
    for rc, so, se in res:
        assert rc in (0, 4), se
    if force:
        assert codes == [0, 0, 0]  # each replaced the whole folder in turn
    else:
        assert codes == [0, 4, 4]  # one wins; the others are told the output exists
        assert all("output" in so and "result" in so for rc, so, _ in res if rc == 4)
    winner = _check_result(tmp_path / "result")
    if not force:
        assert res[winner][0] == 0
    # No temporaries or set-aside old folders remain next to the result.
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".result")]


def test_existing_output_is_refused_before_writing(tmp_path):
    from atlasreg.io.atomic import atomic_path

    out = tmp_path / "result"
    out.mkdir()
    with pytest.raises(OutputExistsError, match="force"):
        with atomic_path(out) as tmp:
            tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
