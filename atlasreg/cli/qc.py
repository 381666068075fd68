"""``atlasreg qc``: a self-contained HTML report for a result folder; ``atlasreg neuroglancer``: one view of
registered precomputed layers."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

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


@app.command("neuroglancer")
@run_cli
def neuroglancer(
    layers: List[str] = typer.Argument(..., help="Layers as NAME=PATH: a neuroglancer precomputed folder (written by "
                                       "atlasreg) or a precomputed:// URL; the first volume sets the view."),
    out: Path = output_option("State file (.json)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder the --base-url server serves; local layers "
                                        "must lie inside it."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="HTTP(S) address of --root, e.g. "
                                           "http://localhost:8000 (serve it with CORS)."),
    viewer: str = typer.Option("https://neuroglancer-demo.appspot.com", "--viewer",
                               help="Neuroglancer web viewer for the printed link."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing state file."),
) -> None:
    """Write a neuroglancer state that opens registered layers in one view (EM, light-sheet, atlas regions, points).

    Prints a link that opens it. The layers must be in one atlasreg space.

    Example:

      atlasreg neuroglancer EM=out/em atlas=out/atlas --root out --base-url http://localhost:8000 -o out/view.json
    """
    from ..errors import InputError
    from ..qc.neuroglancer import neuroglancer_state, neuroglancer_url, write_neuroglancer_state

    pairs = []
    for item in layers:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"{item!r}: give each layer as NAME=PATH", field="LAYERS")
        pairs.append((name, path))
    state = neuroglancer_state(pairs, root=root, base_url=base_url)
    say(f"wrote {write_neuroglancer_state(state, out, force=force)}", err=True)
    typer.echo(neuroglancer_url(state, viewer))
