"""The QC report in a real browser: headless Chromium (Debian's ``chromium``) driven over the
DevTools protocol on a pipe (``--remote-debugging-pipe``), so no port and no extra package.

Checks that every figure decodes (``complete && naturalWidth > 0``) and that the page logs no
console error, uncaught exception or failed resource load. A control page with a broken image
and a script error proves the harness sees such faults.

Without chromium the tests skip, unless ``ATLASREG_REQUIRE_BROWSER=1`` (set by .ci/run): then
they fail.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-extensions", "--mute-audio", "--remote-debugging-pipe"]


def _chromium() -> str:
    exe = os.environ.get("ATLASREG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and Path("/usr/bin/chromium").exists():
        exe = "/usr/bin/chromium"
    if exe is None:
        msg = "headless Chromium not found (Debian: apt-get install chromium)"
        if os.environ.get("ATLASREG_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + "; ATLASREG_REQUIRE_BROWSER=1 requires it")
        pytest.skip(msg)
    return exe


class Browser:
    """A minimal DevTools-protocol client over Chromium's pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, exe: str):
        self.profile = tempfile.mkdtemp(prefix="atlasreg-chromium-")
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()

        def place_fds():  # runs in the child before exec
            a, b = os.dup(cmd_r), os.dup(out_w)  # either may already be 3 or 4
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen([exe, *_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=place_fds, close_fds=False)
        os.close(cmd_r)
        os.close(out_w)
        self._w, self._r = cmd_w, out_r
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method} failed: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        for m in self.events:
            if m.get("method") == method:
                return m
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def inspect_page(path: Path) -> dict:
    """Load ``path`` in headless Chromium; return its images and every error the page produced."""
    b = Browser(_chromium())
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            b.send(domain, session=s)
        b.send("Page.navigate", {"url": path.resolve().as_uri()}, session=s)
        b.wait_for("Page.loadEventFired")
        expr = ("JSON.stringify({images: Array.from(document.images).map(i => "
                "({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),"
                " ready: document.body.getAttribute('data-qc-ready'),"
                " broken: document.body.getAttribute('data-figures-broken'),"
                " title: document.title, tables: document.querySelectorAll('table').length})")
        page = json.loads(b.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                                 session=s)["result"]["value"])
        b.send("Runtime.evaluate", {"expression": "1"}, session=s)  # flush pending console events
    finally:
        b.close()
    errors = []
    for e in b.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                       for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    page["errors"] = errors
    return page


def _broken_images(page: dict) -> list[str]:
    return [i["alt"] for i in page["images"] if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]


# -- tests -----------------------------------------------------------------------------------------
def test_harness_sees_broken_images_and_script_errors(tmp_path):
    """Control: the checks below would catch a broken figure and a script error."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img alt='truncated' src='data:image/png;base64,iVBORw0KGgo='>"
                   "<img alt='missing' src='missing.png'>"
                   "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    page = inspect_page(bad)
    assert sorted(_broken_images(page)) == ["missing", "truncated"]
    text = "\n".join(page["errors"])
    assert "boom" in text and "undefinedFunction" in text and "missing.png" in text


def test_qc_report_renders_every_figure_without_errors(tmp_path, data_dir):
    """A report of every figure kind, made from the real CCF 200 µm atlas, opens cleanly."""
    from atlasreg import Affine, DisplacementField, Grid, Space, Volume, qc

    z = np.load(data_dir / "atlas" / "allen_mouse_200um.npz")
    ref = Volume(z["reference"], 200.0, space="ccf", orientation="asr")
    ann = Volume(z["annotation"], 200.0, space="ccf", orientation="asr")
    shifted = ref.with_data(np.roll(ref.numpy(), 2, axis=0))
    rng = np.random.default_rng(0)
    u = rng.normal(0, 300.0, (8, 6, 7, 3))  # rough on purpose: some folding to mark
    F = DisplacementField(u, spacing=(1300, 1300, 1300), src="ccf", dst="warped", outside="zero")
    det = qc.jacobian_determinant(F, ref.grid)
    assert qc.folding_fraction(det) > 0
    pts = rng.uniform(0, 8000, (15, 3))
    moved = Affine.from_translation([30, -20, 10], "ccf", "ccf2").map_points(pts) + rng.normal(0, 15, pts.shape)
    labels, counts = np.unique(ann.numpy()[ann.numpy() > 0], return_counts=True)
    figs = qc.registration_figures(ref, shifted, annotation=ann, jacobian=ref.with_data(det))
    figs["Landmark residuals"] = qc.landmark_residuals(moved, pts, labels=[f"p{i}" for i in range(15)])
    figs["Voxels per region"] = qc.region_counts_bar(dict(zip(labels.tolist(), counts.tolist())), top=15)
    out = qc.write_report({"title": "browser check", "metrics": {"NCC": qc.ncc(ref, shifted),
                                                                "folding fraction": qc.folding_fraction(det)},
                           "figures": figs}, tmp_path / "report.html")
    page = inspect_page(out)
    assert page["title"] == "browser check"
    assert len(page["images"]) == len(figs) == 6
    assert _broken_images(page) == []
    assert page["ready"] == "1" and page["broken"] == "0"  # the report's own load check agrees
    assert page["errors"] == []


def test_demo_report_renders_in_browser():
    """The report `atlasreg demo` writes opens with all its figures and no errors."""
    from _demo_run import demo_output

    out = demo_output()
    page = inspect_page(out / "report.html")
    assert len(page["images"]) >= 8
    assert _broken_images(page) == []
    assert page["errors"] == []
    assert page["tables"] >= 2
