"""A self-contained HTML QC report: figures embedded as PNG data URIs, numbers in a table.

One file, no external resources, opens in any browser and can be mailed or archived as is.

A report is described by a dict (every key optional except what you want shown)::

    {"title": "...", "summary": "one paragraph",
     "stages":  [{"name": "register", "status": "ok", "seconds": 12.3, "detail": "TRE 41 µm"}, ...],
     "metrics": [{"section": "registration", "name": "TRE median", "value": 41.2, "unit": "µm",
                  "note": "vs ground truth"}, ...]          # or a flat {name: value} dict
     "figures": {caption: Figure | PNG bytes | path to a .png, ...}   # or a list of (caption, fig)
     "tables":  {caption: pandas.DataFrame, ...}}

or by a result folder: one holding ``summary.json`` in that layout (figures and tables named by
file, as the demo writes it), or a saved registration result (:meth:`RegistrationResult.save`),
from which the figures and numbers are computed.

Example
-------
>>> from atlasreg.qc import write_report
>>> write_report({"title": "demo", "metrics": {"TRE median (µm)": 12.0}}, "report.html")  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from ..io.paths import inside
from .figures import overlay_key

REGION_ROWS_SHOWN = 40  # rows of the region-volume table in the report; the CSV holds them all

SUMMARY_FILE = "summary.json"
#: Largest figure file embedded (a QC figure is a few hundred kB).
MAX_FIGURE_BYTES = 64 * 2**20

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:1.5em} header p{margin:4px 0 0;opacity:.85;font-size:.9em}
main{padding:8px 28px 40px;max-width:1400px}
h2{border-bottom:2px solid #1f3a5f;padding-bottom:4px;margin-top:28px;font-size:1.15em}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:8px 0}
th,td{border:1px solid #d5d9e0;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#e8ecf2} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.sec td{background:#f0f2f5;font-weight:600}
.ok{color:#1a7f37;font-weight:600} .failed{color:#c62828;font-weight:600} .skipped{color:#8a6d00;font-weight:600}
figure{background:#fff;border:1px solid #d5d9e0;margin:14px 0;padding:8px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}
.toggle{margin:0 0 6px} button.variant{font:inherit;font-size:.85em;padding:3px 10px;margin-right:4px;
border:1px solid #1f3a5f;background:#fff;color:#1f3a5f;border-radius:3px;cursor:pointer}
button.variant.on{background:#1f3a5f;color:#fff}
figcaption{font-size:.9em;color:#444;margin-top:4px}
.summary{background:#fff;border-left:4px solid #1f3a5f;padding:8px 14px;margin:14px 0}
footer{color:#777;font-size:.8em;padding:0 28px 20px}
"""

# Sets body attributes once the page has loaded, so a headless browser (and a person with the
# developer tools open) can see at a glance whether every figure decoded.
_JS = """
function atlasregShow(group, index) {
  var els = document.querySelectorAll('[data-group="' + group + '"]');
  for (var i = 0; i < els.length; i++) {
    var mine = els[i].getAttribute("data-index") === String(index);
    if (els[i].tagName === "IMG") { els[i].style.display = mine ? "" : "none"; }
    else { els[i].className = "variant" + (mine ? " on" : ""); }
  }
}
window.addEventListener("load", function () {
  var imgs = document.images, broken = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { broken.push(imgs[i].alt || String(i)); }
  }
  document.body.setAttribute("data-figures", String(imgs.length));
  document.body.setAttribute("data-figures-broken", String(broken.length));
  document.body.setAttribute("data-qc-ready", "1");
});
"""


# -- inputs -----------------------------------------------------------------------------------------
def _png_bytes(obj, base: Path | None) -> bytes:
    if isinstance(obj, (bytes, bytearray)):
        data = bytes(obj)
    elif isinstance(obj, (str, Path)):
        p = Path(obj)
        if base is not None and not p.is_absolute():
            p = base / p
        if not p.is_file():
            raise InputError("figure file not found", path=p)
        size = p.stat().st_size
        if size > MAX_FIGURE_BYTES:
            raise InputError(f"figure file is {size} bytes, more than the {MAX_FIGURE_BYTES} a QC figure may have",
                             path=p)
        data = p.read_bytes()
    elif hasattr(obj, "savefig"):
        from .figures import figure_png

        data = figure_png(obj)
    else:
        raise InputError(f"a figure must be a matplotlib Figure, PNG bytes or a .png path, "
                         f"got {type(obj).__name__}", field="figures")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputError("figure is not a PNG image", field="figures")
    return data


def _items(obj) -> list:
    if obj is None:
        return []
    if isinstance(obj, Mapping):
        return list(obj.items())
    out = []
    for it in obj:
        if isinstance(it, Mapping):
            out.append((it.get("caption", ""), it.get("file", it.get("figure", it.get("table")))))
        else:
            out.append(tuple(it))
    return out


def _metric_rows(metrics) -> list[dict]:
    if metrics is None:
        return []
    if isinstance(metrics, Mapping):
        rows = []
        for k, v in metrics.items():
            if isinstance(v, Mapping) and "value" not in v:  # {section: {name: value}}
                rows += [dict(section=str(k), name=str(n), value=x) for n, x in v.items()]
            elif isinstance(v, Mapping):
                rows.append(dict(v, name=str(k)))
            else:
                rows.append(dict(name=str(k), value=v))
        return rows
    return [dict(r) for r in metrics]


def format_value(v) -> str:
    """A number as the report shows it (thousands separated, 4 significant digits, n/a for None/NaN).

    Examples
    --------
    >>> format_value(12345.678), format_value(0.000012), format_value(float("nan"))
    ('12,345.7', '1.200e-05', 'n/a')
    """
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "n/a"
        if f != 0 and (abs(f) >= 1e6 or abs(f) < 1e-3):
            return f"{f:.3e}"
        return f"{f:.4g}" if abs(f) < 1000 else f"{f:,.1f}"
    return str(v)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _load_folder(folder: Path) -> dict:
    summ = folder / SUMMARY_FILE
    if summ.exists():
        try:
            data = json.loads(summ.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc})", path=summ) from None
        if not isinstance(data, dict):
            raise InputError("summary.json must hold a JSON object", path=summ)
        data["_base"] = folder
        # summary.json is a file like any other: the files it names must lie inside its folder
        try:
            def confined(f):  # a figure file, or {label: file} for a figure in several versions
                if isinstance(f, Mapping):
                    return {str(k): inside(folder, v, source=summ, field="figures") for k, v in f.items()}
                return inside(folder, f, source=summ, field="figures")

            data["figures"] = [(cap, confined(f)) for cap, f in _items(data.get("figures"))]
            tables = []
            for cap, f in _items(data.get("tables")):
                import pandas as pd

                p = inside(folder, f, source=summ, field="tables")
                if not p.is_file():
                    raise InputError("table file named in summary.json not found", path=p)
                tables.append((cap, pd.read_csv(p)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"'figures'/'tables' must map captions to file names ({exc})", path=summ) from None
        data["tables"] = tables
        return data
    return _load_registration(folder)


def _load_registration(folder: Path) -> dict:
    """A report for a folder :meth:`RegistrationResult.save` (``atlasreg register``) wrote: its numbers, its
    overlay/checkerboard/Jacobian figures, the atlas boundaries drawn on the sample (when the sample file it
    recorded is still there) and the region volumes as a bar chart and a table."""
    res_file = folder / "result.json"
    if not res_file.is_file():
        raise InputError(f"no {SUMMARY_FILE} and no result.json here: not a result folder; give the folder "
                         "`atlasreg register` or `atlasreg demo` wrote", path=folder)
    if not (folder / "COMPLETE").exists():
        raise InputError("this registration folder is incomplete (no COMPLETE marker): the run or its save was "
                         "interrupted; rerun `atlasreg register`", path=folder)
    try:
        doc = json.loads(res_file.read_text())
        grids = doc["moving_grid"], doc["fixed_grid"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"damaged result file ({type(exc).__name__}: {exc})", path=res_file) from None
    metrics = doc.get("metrics") or {}
    mfile = folder / "metrics.json"
    if mfile.is_file():  # save() rewrites it after the figures, with the Jacobian numbers added
        try:
            metrics = json.loads(mfile.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc})", path=mfile) from None
    names = {"ncc_initial": ("correlation after initialisation (NCC)", ""),
             "ncc_after": ("correlation after registration (NCC)", ""),
             "inverse_consistency_median_um": ("inverse consistency, median", "µm"),
             "inverse_consistency_p95_um": ("inverse consistency, p95", "µm"),
             "folding_fraction": ("folding fraction (det J <= 0)", ""),
             "jacobian_min": ("det J minimum", ""), "jacobian_max": ("det J maximum", ""),
             "seconds": ("registration time", "s")}
    rows = [{"section": "registration", "name": n, "value": metrics[k], "unit": u,
             "note": "working grid" if k.startswith(("ncc", "inverse")) else ""}
            for k, (n, u) in names.items() if _is_num(metrics.get(k))]
    ori = metrics.get("orientation")
    if isinstance(ori, Mapping):
        rows.append({"section": "registration", "name": "orientation (given / best fit)",
                     "value": f"{ori.get('given')} / {ori.get('best')}", "unit": "",
                     "note": "flagged" if ori.get("flagged") else "consistent"})
    rows.append({"section": "registration", "name": "TRE", "value": None, "unit": "µm",
                 "note": "needs landmarks: atlasreg landmarks fit / report"})
    figs = []
    for name, cap in (("overlay", f"Fixed image and registered sample, three planes: "
                                  f"{overlay_key('fixed', 'registered sample')}"),
                      ("checkerboard", "Checkerboard of fixed image and registered sample"),
                      ("jacobian", "Jacobian determinant of the fixed -> moving map (folding in black)")):
        if (folder / "qc" / f"{name}.png").is_file():
            figs.append((cap, Path("qc") / f"{name}.png"))  # relative to the folder (the report's base)
    levels = _boundary_index(folder)
    if levels:  # drawn by save() when it had the sample and the atlas, one file per hierarchy level
        boundary, why = levels, None
    elif (folder / "qc" / "boundaries.png").is_file():
        boundary, why = Path("qc") / "boundaries.png", None
    else:
        boundary, why = _boundaries_on_sample(folder, grids[0])
    notes = [why] if why else []
    if boundary is not None:
        figs.insert(2, ("Atlas region boundaries drawn on the sample (native sample grid); the buttons switch "
                        "the hierarchy level", boundary))
    tables = []
    vol_csv = folder / "region_volumes.csv"
    if vol_csv.is_file():
        import pandas as pd

        from .figures import region_counts_bar

        try:
            vols = pd.read_csv(vol_csv)
            key = "acronym" if "acronym" in vols.columns else "id"
            counts = dict(zip(vols[key].astype(str), vols["volume_mm3"].astype(float)))
        except (ValueError, KeyError, pd.errors.ParserError) as exc:
            raise InputError(f"damaged region volume table ({exc})", path=vol_csv) from None
        if counts:
            figs.append(("Region volumes in the sample (largest)",
                         region_counts_bar(counts, top=20, title="region volume in the sample", xlabel="mm³")))
            vols = vols.sort_values("volume_mm3", ascending=False, kind="stable")  # older folders: by id
            shown = vols.head(REGION_ROWS_SHOWN)
            more = len(vols) - len(shown)
            tables.append((f"Region volumes in the sample (mm³), largest first"
                           + (f": {len(shown)} of {len(vols)} regions (all in region_volumes.csv)" if more else ""),
                           shown))
    m, f = grids[0]["space"]["name"], grids[1]["space"]["name"]
    return {"title": f"atlasreg registration: {m} -> {f}", "_base": folder, "metrics": rows, "figures": figs,
            "tables": tables, "notes": notes, "subtitle": f"{doc.get('backend', '?')} backend, preset "
                                          f"{(doc.get('params') or {}).get('preset', '?')}",
            "summary": f"Registration result in {folder}. Similarity and inverse consistency are measured on "
                       "the working grid; the Jacobian on the fixed grid."}


def _boundary_index(folder: Path) -> dict:
    """``{level label: qc/<file>.png}`` from the ``qc/boundaries.json`` save() writes ({} if absent)."""
    f = folder / "qc" / "boundaries.json"
    if not f.is_file():
        return {}
    try:
        index = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc})", path=f) from None
    out = {}
    for label, name in (index.items() if isinstance(index, dict) else []):
        p = Path(str(name))
        if p.name != str(name) or not (folder / "qc" / p.name).is_file():  # a bare file name inside qc/ only
            raise InputError(f"boundary figure {name!r} is not a file in qc/", path=f)
        out[str(label)] = Path("qc") / p.name
    return out


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _boundaries_on_sample(folder: Path, moving_grid: dict):
    """(figure, None): the atlas annotation warped onto the sample, drawn on the sample image the run recorded;
    (None, why not) when the run had no atlas or the sample file is gone or changed."""
    from ..errors import AtlasregError

    ann_file = folder / "annotation_in_moving.nii.gz"
    if not ann_file.is_file():
        return None, ("no atlas boundaries on the sample: no atlas annotation was saved with this registration "
                      "(registered to a fixed image that is not an atlas's)")
    try:
        rec = json.loads((folder / "record.json").read_text())
        sample = Path(rec["inputs"]["sample"]["path"])
        digest = rec["inputs"]["sample"].get("sha256")
    except (OSError, ValueError, KeyError, TypeError):
        return None, "no atlas boundaries on the sample: record.json does not name the sample file"
    if not sample.is_file():
        return None, f"no atlas boundaries on the sample: the sample file {sample} is not there any more"
    from ..io.volumes import read_volume
    from ..volume import Volume
    from .figures import boundary_levels

    if digest and _sha256(sample) != digest:  # changed since: never draw on the wrong image
        return None, f"no atlas boundaries on the sample: {sample} changed since the registration (sha256)"
    try:
        ann = read_volume(ann_file)
        img = read_volume(sample, voxel_size=list(moving_grid["spacing"]), override=True)
    except AtlasregError as exc:
        return None, f"no atlas boundaries on the sample: {exc}"
    if img.shape != ann.shape:
        return None, f"no atlas boundaries on the sample: {sample} has shape {img.shape}, the result {ann.shape}"
    code = moving_grid["space"].get("orientation")
    img = Volume(img.numpy(), img.voxel_size, space=img.space.name, orientation=code)
    onto = None
    onto_path = ((rec.get("inputs") or {}).get("atlas_ontology") or {}).get("path")
    if onto_path and Path(onto_path).is_file():
        from ..atlas.ontology import Ontology

        try:
            onto = Ontology.read(onto_path)
        except AtlasregError:
            onto = None
    return boundary_levels(img, ann.numpy(), onto, title="atlas boundaries on the sample"), None


# -- rendering --------------------------------------------------------------------------------------
def _variant_figure(k: int, cap: str, variants: Mapping, base) -> str:
    """One figure with several versions (``{label: figure}``) and buttons that show one at a time; the first
    is shown first. Works without a server: plain inline script."""
    e = html.escape
    if not variants:
        raise InputError(f"figure {cap!r} has no versions", field="figures")
    buttons, imgs = [], []
    for j, (label, fig) in enumerate(variants.items()):
        b64 = base64.b64encode(_png_bytes(fig, base)).decode("ascii")
        on = j == 0
        hide = "" if on else ' style="display:none"'
        buttons.append(f"<button type=\"button\" class=\"variant{' on' if on else ''}\" data-group=\"v{k}\" "
                       f"data-index=\"{j}\" onclick=\"atlasregShow('v{k}',{j})\">{e(str(label))}</button>")
        imgs.append(f"<img data-group=\"v{k}\" data-index=\"{j}\" alt=\"{e(f'{cap}: {label}', quote=True)}\" "
                    f"src=\"data:image/png;base64,{b64}\"{hide}>")
    return (f"<figure class=\"variants\"><div class=\"toggle\">{''.join(buttons)}</div>{''.join(imgs)}"
            f"<figcaption>{e(cap)}</figcaption></figure>")


def render_report(result) -> str:
    """The HTML text of a report (see the module docstring for what ``result`` may be).

    Example
    -------
    >>> html_text = render_report({"title": "t", "metrics": {"Dice mean": 0.91}})
    >>> "Dice mean" in html_text
    True
    """
    if isinstance(result, (str, Path)):
        folder = Path(result)
        if not folder.is_dir():
            raise InputError("result folder not found (give the folder a registration or the demo wrote)",
                             path=folder)
        result = _load_folder(folder)
    if not isinstance(result, Mapping):
        raise InputError(f"a report is made from a result folder or a dict, got {type(result).__name__}",
                         field="result")
    base = result.get("_base")
    e = html.escape
    title = str(result.get("title") or "atlasreg QC report")
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    try:
        import importlib.metadata as md

        version = md.version("atlasreg")
    except Exception:
        version = "?"
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
             f"<title>{e(title)}</title><style>{_CSS}</style><script>{_JS}</script></head><body>",
             f"<header><h1>{e(title)}</h1><p>atlasreg {e(version)} &middot; {e(now)}"
             + (f" &middot; {e(str(result['subtitle']))}" if result.get("subtitle") else "") + "</p></header><main>"]
    if result.get("summary"):
        parts.append(f"<div class=\"summary\">{e(str(result['summary']))}</div>")

    stages = result.get("stages") or []
    if stages:
        parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time (s)</th>"
                     "<th>result</th></tr>")
        for s in stages:
            status = str(s.get("status", ""))
            cls = status if status in ("ok", "failed", "skipped") else ""
            parts.append(f"<tr><td>{e(str(s.get('name', '')))}</td><td class=\"{cls}\">{e(status)}</td>"
                         f"<td class=\"num\">{e(format_value(s.get('seconds')))}</td>"
                         f"<td>{e(str(s.get('detail', '')))}</td></tr>")
        parts.append("</table>")

    rows = _metric_rows(result.get("metrics"))
    if rows:
        parts.append("<h2>Numbers</h2><table><tr><th>measure</th><th>value</th><th>unit</th><th>note</th></tr>")
        section = None
        for r in rows:
            sec = r.get("section")
            if sec and sec != section:
                parts.append(f"<tr class=\"sec\"><td colspan=\"4\">{e(str(sec))}</td></tr>")
                section = sec
            v = r.get("value")
            parts.append(f"<tr><td>{e(str(r.get('name', '')))}</td>"
                         f"<td class=\"{'num' if _is_num(v) else ''}\">{e(format_value(v))}</td>"
                         f"<td>{e(str(r.get('unit', '') or ''))}</td><td>{e(str(r.get('note', '') or ''))}</td></tr>")
        parts.append("</table>")

    figs = _items(result.get("figures"))
    if figs:
        parts.append("<h2>Figures</h2>")
        for k, (cap, fig) in enumerate(figs):
            if isinstance(fig, Mapping):  # variants of one figure (e.g. hierarchy levels): a toggle shows one
                parts.append(_variant_figure(k, str(cap), fig, base))
                continue
            b64 = base64.b64encode(_png_bytes(fig, base)).decode("ascii")
            parts.append(f"<figure><img alt=\"{e(str(cap), quote=True)}\" src=\"data:image/png;base64,{b64}\">"
                         f"<figcaption>{e(str(cap))}</figcaption></figure>")

    for cap, table in _items(result.get("tables")):
        parts.append(f"<h2>{e(str(cap))}</h2>")
        if hasattr(table, "to_html"):
            parts.append(table.to_html(index=False, border=0, na_rep="n/a", float_format=lambda x: f"{x:.4g}"))
        else:
            parts.append(f"<pre>{e(str(table))}</pre>")

    if result.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(str(n))}</li>" for n in result["notes"]) + "</ul>")
    parts.append("</main><footer>Self-contained report written by atlasreg; figures are embedded PNG images."
                 "</footer></body></html>\n")
    return "".join(parts)


def write_report(result, out_html, force: bool = False) -> Path:
    """Write a self-contained HTML report and return its path.

    Parameters
    ----------
    result : result folder (``summary.json`` or a saved registration) or a report dict
    out_html : path of the ``.html`` file to write
    force : overwrite an existing file

    Example
    -------
    >>> write_report("atlasreg-demo", "atlasreg-demo/report.html", force=True)   # doctest: +SKIP
    """
    out = Path(out_html)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError("the report is HTML: give a file name ending in .html", path=out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists")
    text = render_report(result)  # fully rendered before anything is written
    from ..io.atomic import write_atomic

    return write_atomic(out, text, force=force)
