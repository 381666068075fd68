"""``atlasreg demo``: the whole multi-scale chain on a phantom with known truth (or on real data)."""
from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, output_option, run_cli, say


@app.command()
@run_cli
def demo(
    out: Path = output_option("Result folder to write.", Path("atlasreg-demo")),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing result folder."),
    data_dir: Path = typer.Option(None, "--data-dir",
                                  help="Run on the real data in this folder (atlas/, lightsheet/, em_lm/, "
                                       "neurons/) instead of the built-in phantom."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantom (phantom mode only)."),
) -> None:
    """Run the whole chain and write a result folder with an HTML report.

    Without arguments: builds a small phantom with known ground truth (atlas, warped sample, EM
    block with landmarks, neurons), registers the sample to the atlas, brings the EM block and
    the neurons into the atlas, counts cells per region, and prints how accurate every step was.
    No network; about half a minute on two cores (the real-data run: several minutes,
    with progress and elapsed time for every stage).

    Examples:

      atlasreg demo

      atlasreg demo -o /tmp/demo --force

      atlasreg demo --data-dir ../shared/data -o real-demo
    """
    from ..demo.pipeline import run_demo

    summary = run_demo(out, data_dir=data_dir, force=force, seed=seed)
    say(summary["text"])
