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

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from ..io.atomic import write_atomic
from .stages import Run

log = logging.getLogger("atlasreg.demo")

#: Files and folders the demo writes inside its result folder (what --force replaces).
_OWNED = ("inputs", "registration", "transforms", "atlas_space", "figures", "tables", "summary.json",
          "report.html")


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
    run = Run(out, n, echo)
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
        write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=1, default=_json_default))
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


def _summary_paragraph(run: Run, phantom: bool) -> str:
    ok = sum(s["status"] == "ok" for s in run.stages)
    skipped = [s["name"] for s in run.stages if s["status"] == "skipped"]
    what = ("Every number below is measured against the phantom's exact ground truth."
            if phantom else "Real data: accuracy is measured where the data gives a reference "
                            "(held-out landmarks, annotated soma regions, image similarity).")
    s = f"{ok} of {len(run.stages)} stages ran. {what}"
    if skipped:
        s += " Skipped (not available in this installation): " + ", ".join(skipped) + "."
    return s


def _summary_text(run: Run, report: Path, seconds: float) -> str:
    lines = ["", "Accuracy of each step:"]
    section = None
    for m in run.metrics:
        if not m.get("headline", True):
            continue
        if m["section"] != section:
            section = m["section"]
            lines.append(f"  {section}")
        from ..qc.report import format_value

        lines.append(f"    {m['name']:<46} {format_value(m['value']):>10} {m['unit']:<4} {m['note']}".rstrip())
    skipped = [s for s in run.stages if s["status"] != "ok"]
    for s in skipped:
        lines.append(f"  {s['name']}: {s['status']} ({s['detail']})")
    lines.append(f"Report: {report.resolve()}")
    lines.append(f"Finished in {seconds:.0f} s.")
    return "\n".join(lines)
