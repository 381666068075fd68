"""Screenshot an HTML page (e.g. a QC report) in headless Chromium, for looking at it and for the README.

Uses the DevTools-protocol client of ``tests/test_browser.py`` (Chromium on a pipe; no extra package).

    python benchmarks/report_screenshot.py reg/qc_report.html shot.png --width 1400 --height 2400
    python benchmarks/report_screenshot.py report.html shot.png --click "Depth 7"   # press a toggle first
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_browser import Browser, _chromium  # noqa: E402


def screenshot(page: Path, out: Path, width: int = 1400, height: int = 2000, click: str | None = None,
               full_page: bool = True, scroll_to: str | None = None) -> dict:
    """Load ``page``, optionally press the first button whose text contains ``click``, save a PNG to ``out``.

    ``scroll_to``: a CSS selector whose element's box is captured instead of the whole page.
    Returns the page size and the clip used.
    """
    b = Browser(_chromium())
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        b.send("Page.enable", session=s)
        b.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                      "mobile": False}, session=s)
        b.send("Page.navigate", {"url": page.resolve().as_uri()}, session=s)
        b.wait_for("Page.loadEventFired")
        if click:
            js = ("(function(){var bs=document.querySelectorAll('button');for(var i=0;i<bs.length;i++){"
                  f"if(bs[i].textContent.indexOf({json.dumps(click)})>=0){{bs[i].click();return true;}}}}"
                  "return false;})()")
            hit = b.send("Runtime.evaluate", {"expression": js, "returnByValue": True}, session=s)
            if not hit["result"].get("value"):
                raise SystemExit(f"no button with text {click!r} on the page")
            time.sleep(0.3)
        dims = json.loads(b.send("Runtime.evaluate", {"expression": "JSON.stringify([document.documentElement."
                                                      "scrollWidth, document.documentElement.scrollHeight])",
                                                      "returnByValue": True}, session=s)["result"]["value"])
        clip = {"x": 0, "y": 0, "width": dims[0], "height": dims[1] if full_page else height, "scale": 1}
        if scroll_to:
            js = (f"JSON.stringify((function(){{var r=document.querySelector({json.dumps(scroll_to)})"
                  ".getBoundingClientRect();return [r.left+window.scrollX,r.top+window.scrollY,r.width,r.height];})())")
            x, y, w, h = json.loads(b.send("Runtime.evaluate", {"expression": js, "returnByValue": True},
                                           session=s)["result"]["value"])
            clip = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
        shot = b.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                      session=s)
        out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        b.close()
    return {"page": dims, "clip": clip}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--click")
    ap.add_argument("--element", help="CSS selector of the element to capture (e.g. 'figure.variants')")
    a = ap.parse_args()
    print(screenshot(a.page, a.out, a.width, a.height, a.click, scroll_to=a.element))
