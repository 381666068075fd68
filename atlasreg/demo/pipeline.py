"""The demo pipeline: the whole multi-scale chain, each step scored against what is known.

Phantom mode (default) scores every step against exact ground truth; real-data mode
(``data_dir``) runs the same chain on the shared real data and scores it against what the data
itself can tell (held-out landmarks, the soma regions fMOST annotators recorded, image similarity).

Stages (phantom): generate the phantom; build its atlas; register the sample to the atlas;
move detected cells into the atlas and count them per region; fit the EM block's landmarks to the
sample; carry EM synapses EM -> sample -> atlas; move traced neurons into the atlas; combine EM and
optical data (which neurons pass through the EM block, which synapses lie on them); write the report.

A stage whose library part is not installed or not available is reported as skipped, never faked.

Example
-------
>>> from atlasreg.demo.pipeline import run_demo
>>> summary = run_demo("atlasreg-demo", force=True)       # doctest: +SKIP
>>> print(summary["text"])                                # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, OutputExistsError

log = logging.getLogger("atlasreg.demo")

#: Files and folders the demo writes inside its result folder (what --force replaces).
_OWNED = ("inputs", "registration", "transforms", "atlas_space", "figures", "tables", "summary.json",
          "report.html")


class Unavailable(Exception):
    """A part of atlasreg a stage needs is not available in this installation."""


def _need(module: str, name: str | None = None):
    """Import ``module`` (and get ``name``) or raise :class:`Unavailable` naming what is missing."""
    try:
        m = importlib.import_module(module)
        return getattr(m, name) if name else m
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"{module}{'.' + name if name else ''} is not available ({exc})") from None


class _Run:
    """Collects stages, numbers, figures and tables; prints progress as it goes."""

    def __init__(self, out: Path, n_stages: int, echo):
        self.out = out
        self.n = n_stages
        self.k = 0
        self.echo = echo
        self.t0 = time.perf_counter()
        self.stages: list[dict] = []
        self.metrics: list[dict] = []
        self.figures: list[dict] = []
        self.tables: list[dict] = []
        self.notes: list[str] = []
        self.failed: dict[str, str] = {}

    @contextlib.contextmanager
    def stage(self, name: str, needs: tuple = ()):
        self.k += 1
        rec = {"name": name, "status": "ok", "seconds": 0.0, "detail": ""}
        self.stages.append(rec)
        missing = [n for n in needs if n in self.failed]
        if missing:
            rec.update(status="skipped", detail=f"needs '{missing[0]}' ({self.failed[missing[0]]})")
            self.failed[name] = "skipped"
            self.echo(f"[{self.k}/{self.n}] {name}: skipped, {rec['detail']}")
            yield None
            return
        self.echo(f"[{self.k}/{self.n}] {name} ...")
        t = time.perf_counter()
        try:
            yield rec
        except Unavailable as exc:
            rec.update(status="skipped", detail=str(exc))
            self.failed[name] = "not available"
            self.echo(f"      skipped: {exc}")
        finally:
            rec["seconds"] = round(time.perf_counter() - t, 2)
        if rec["status"] == "ok":
            self.echo(f"      done in {rec['seconds']:.1f} s (total {time.perf_counter() - self.t0:.0f} s)"
                      + (f": {rec['detail']}" if rec["detail"] else ""))

    def progress(self):
        """A ``progress(stage, status)`` callback for :func:`atlasreg.register`: one line as each of its stages
        starts and one with its time when it ends, so a long registration says how it is getting on."""
        started: dict = {}

        def note(name: str, what: str) -> None:
            if what == "start":
                started[name] = time.perf_counter()
                self.echo(f"      {name} ...")
            elif what == "done" and name in started:
                self.echo(f"      {name} done in {time.perf_counter() - started.pop(name):.1f} s "
                          f"(total {time.perf_counter() - self.t0:.0f} s)")
            elif what == "skip":
                self.echo(f"      {name}: already done (resumed)")

        return note

    def metric(self, section: str, name: str, value, unit: str = "", note: str = "") -> None:
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        self.metrics.append({"section": section, "name": name, "value": value, "unit": unit, "note": note})

    def figure(self, caption: str, fig, filename: str) -> None:
        from ..qc.figures import figure_png

        path = self.out / "figures" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(figure_png(fig))
        self.figures.append({"caption": caption, "file": f"figures/{filename}"})

    def figure_variants(self, caption: str, figs: dict, stem: str) -> None:
        """One figure in several versions (``{label: figure}``), shown one at a time in the report."""
        from ..qc.figures import figure_png

        files = {}
        for j, (label, fig) in enumerate(figs.items()):
            name = f"{stem}.png" if j == 0 else f"{stem}_{j}.png"
            path = self.out / "figures" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(figure_png(fig))
            files[label] = f"figures/{name}"
        self.figures.append({"caption": caption, "file": files})

    def table(self, caption: str, df: pd.DataFrame, filename: str) -> None:
        path = self.out / "tables" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        self.tables.append({"caption": caption, "file": f"tables/{filename}"})


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("result folder path exists and is not a folder", path=out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(f"{out} exists and is not empty")
        for name in _OWNED:  # replace what a previous demo wrote, leave anything else alone
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _stats(err: np.ndarray) -> tuple[float, float]:
    e = err[np.isfinite(err)]
    return (float(np.median(e)), float(np.percentile(e, 95))) if e.size else (float("nan"), float("nan"))


def _call(func, *args, **kwargs):
    """Call ``func`` with only the keyword arguments its signature accepts."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return func(*args, **kwargs)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return func(*args, **kwargs)
    return func(*args, **{k: v for k, v in kwargs.items() if k in params})


def _landmark_transform(fit):
    """The Transform inside whatever ``fit_landmarks`` returned."""
    from ..transforms.base import Transform

    if isinstance(fit, Transform):
        return fit
    t = getattr(fit, "transform", None)
    if isinstance(t, Transform):
        return t
    raise Unavailable(f"fit_landmarks returned {type(fit).__name__} without a transform")


def _fit_report(fit) -> dict:
    """Model choice and cross-validated error of a landmark fit (its ``.report``), where it has them."""
    out = {}
    rep = getattr(fit, "report", None)
    for src in (rep, fit):
        if src is None:
            continue
        if "model" not in out and isinstance(getattr(src, "model", None), str):
            out["model"] = src.model
        for key, name in (("cv_median", "cv"), ("cv_p95", "cv_p95")):
            v = getattr(src, key, None)
            if name not in out and isinstance(v, (int, float, np.floating)):
                out[name] = float(v)
        cands = getattr(src, "candidates", None)
        if "candidates" not in out and isinstance(cands, list) and cands:
            out["candidates"] = _best_candidates(pd.DataFrame(cands))
    return out


def _best_candidates(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model (and spline kernel): the chosen setting, or the best by held-out error."""
    if "model" not in df.columns:
        return df
    key = ["model"] + (["kernel"] if "kernel" in df.columns else [])
    score = "cv_mean" if "cv_mean" in df.columns else ("cv_median" if "cv_median" in df.columns else None)
    rows = []
    for _, g in df.groupby(key, dropna=False, sort=False):
        if "selected" in g.columns and g["selected"].astype(bool).any():
            rows.append(g[g["selected"].astype(bool)].iloc[0])
        else:
            rows.append(g.loc[g[score].idxmin()] if score else g.iloc[0])
    return pd.DataFrame(rows).reset_index(drop=True)


# =================================================================================================
def run_demo(out="atlasreg-demo", *, data_dir=None, force: bool = False, seed: int = 0, echo=None) -> dict:
    """Run the demo and write ``out`` (inputs, results, figures, ``summary.json``, ``report.html``).

    Parameters
    ----------
    out : result folder; must be empty or absent unless ``force``
    data_dir : folder of the real data (``atlas/``, ``lightsheet/``, ``em_lm/``, ``neurons/``); default:
        the built-in phantom
    force : replace what a previous demo wrote in ``out``
    seed : phantom seed
    echo : callable taking one line of progress (default: the ``atlasreg.demo`` logger)

    Returns
    -------
    dict with ``stages``, ``metrics``, ``report`` (path), ``seconds`` and ``text`` (the printed summary)

    Example
    -------
    >>> s = run_demo("/tmp/demo", force=True)                       # doctest: +SKIP
    >>> [m for m in s["metrics"] if m["name"] == "TRE median"]      # doctest: +SKIP
    """
    out = Path(out)
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not (data_dir / "atlas").is_dir():
            raise InputError("no atlas/ folder here: give the shared data folder (it holds atlas/, "
                             "lightsheet/, em_lm/, neurons/)", path=data_dir)
    _prepare_out(out, force)
    echo = echo or log.info
    if data_dir is None:
        from .phantom_chain import run_phantom_chain as chain
        title = "atlasreg demo: the multi-scale chain on a phantom with known ground truth"
        n = 9
    else:
        from .real_chain import run_real_chain as chain
        title = f"atlasreg demo on real data ({data_dir})"
        n = 6
    run = _Run(out, n, echo)
    echo(f"atlasreg demo -> {out.resolve()}")
    reg_log = logging.getLogger("atlasreg.registration")
    level = reg_log.level
    reg_log.setLevel(logging.WARNING)  # the demo prints each registration stage itself (with the running total)
    try:
        chain(run, data_dir=data_dir, seed=seed)
    finally:
        reg_log.setLevel(level)
    with run.stage("Write the QC report"):
        from ..qc.report import SUMMARY_FILE, write_report

        summary = {"title": title, "stages": run.stages, "metrics": run.metrics, "figures": run.figures,
                   "tables": run.tables, "notes": run.notes,
                   "summary": _summary_paragraph(run, data_dir is None)}
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=_json_default))
        report = write_report(out, out / "report.html", force=True)
    seconds = time.perf_counter() - run.t0
    text = _summary_text(run, report, seconds)
    return {"stages": run.stages, "metrics": run.metrics, "report": report, "seconds": seconds, "text": text,
            "out": out}


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _summary_paragraph(run: _Run, phantom: bool) -> str:
    ok = sum(s["status"] == "ok" for s in run.stages)
    skipped = [s["name"] for s in run.stages if s["status"] == "skipped"]
    what = ("Every number below is measured against the phantom's exact ground truth."
            if phantom else "Real data: accuracy is measured where the data gives a reference "
                            "(held-out landmarks, annotated soma regions, image similarity).")
    s = f"{ok} of {len(run.stages)} stages ran. {what}"
    if skipped:
        s += " Skipped (not available in this installation): " + ", ".join(skipped) + "."
    return s


def _summary_text(run: _Run, report: Path, seconds: float) -> str:
    lines = ["", "Accuracy of each step:"]
    section = None
    for m in run.metrics:
        if not m.get("headline", True):
            continue
        if m["section"] != section:
            section = m["section"]
            lines.append(f"  {section}")
        from ..qc.report import _fmt

        lines.append(f"    {m['name']:<46} {_fmt(m['value']):>10} {m['unit']:<4} {m['note']}".rstrip())
    skipped = [s for s in run.stages if s["status"] != "ok"]
    for s in skipped:
        lines.append(f"  {s['name']}: {s['status']} ({s['detail']})")
    lines.append(f"Report: {report.resolve()}")
    lines.append(f"Finished in {seconds:.0f} s.")
    return "\n".join(lines)
