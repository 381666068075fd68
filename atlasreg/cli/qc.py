"""``atlasreg qc``: a self-contained HTML report for a result folder."""
from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, output_option, run_cli, say


@app.command()
@run_cli
def qc(
    result_dir: Path = typer.Argument(..., help="Folder written by `atlasreg register` or `atlasreg demo`."),
    out: Path = output_option("Report file (default RESULT_DIR/report.html).", None),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing report."),
) -> None:
    """Write a self-contained HTML QC report (figures embedded) for a registration result.

    The report shows overlay and checkerboard slices in three planes, atlas boundaries on the
    sample, the Jacobian determinant with folding marked, landmark residuals and per-region counts
    where the result has them, and the numbers (TRE, Dice, folding fraction, similarity) in a table.

    Examples:

      atlasreg qc results/brain1

      atlasreg qc atlasreg-demo -o demo-report.html --force
    """
    from ..qc.report import write_report

    target = out if out is not None else Path(result_dir) / "report.html"
    path = write_report(result_dir, target, force=force)
    say(str(path))
