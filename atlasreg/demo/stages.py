"""What the demo's stages share: the run record (stages, numbers, figures, tables) and small helpers.

:mod:`atlasreg.demo.pipeline` drives a run; the two chains (:mod:`~atlasreg.demo.phantom_chain`,
:mod:`~atlasreg.demo.real_chain`) do its stages; both import from here, never from each other.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Unavailable", "need", "Run", "error_stats", "call_accepting", "landmark_transform", "fit_report",
           "best_candidates"]


class Unavailable(Exception):
    """A part of atlasreg a stage needs is not available in this installation."""


def need(module: str, name: str | None = None):
    """Import ``module`` (and get ``name``) or raise :class:`Unavailable` naming what is missing."""
    try:
        m = importlib.import_module(module)
        return getattr(m, name) if name else m
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"{module}{'.' + name if name else ''} is not available ({exc})") from None


class Run:
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


def error_stats(err: np.ndarray) -> tuple[float, float]:
    e = err[np.isfinite(err)]
    return (float(np.median(e)), float(np.percentile(e, 95))) if e.size else (float("nan"), float("nan"))


def call_accepting(func, *args, **kwargs):
    """Call ``func`` with only the keyword arguments its signature accepts."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return func(*args, **kwargs)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return func(*args, **kwargs)
    return func(*args, **{k: v for k, v in kwargs.items() if k in params})


def landmark_transform(fit):
    """The Transform inside whatever ``fit_landmarks`` returned."""
    from ..transforms.base import Transform

    if isinstance(fit, Transform):
        return fit
    t = getattr(fit, "transform", None)
    if isinstance(t, Transform):
        return t
    raise Unavailable(f"fit_landmarks returned {type(fit).__name__} without a transform")


def fit_report(fit) -> dict:
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
            out["candidates"] = best_candidates(pd.DataFrame(cands))
    return out


def best_candidates(df: pd.DataFrame) -> pd.DataFrame:
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
