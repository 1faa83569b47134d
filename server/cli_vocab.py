"""``t4v vocab lint``: what ``PUT /vocab`` would warn about, offline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from text4vis.engine.options import ModelOptions
from text4vis.engine.vocab.validation import validate_templates
from text4vis.models.cli_options import with_options
from text4vis.models.errors import InputError, ModelLoadError
from text4vis.models.prompts import LabelFileWarning
from text4vis.server.cli_common import RUNTIME_ONLY, UsageProblem, fail, label_args, validated


def register(app: typer.Typer) -> None:
    app.add_typer(vocab_app, name="vocab")


vocab_app = typer.Typer(no_args_is_help=True, help="Vocabularies offline.")


@vocab_app.command("lint")
@with_options(ModelOptions, exclude=("text4vis_checkpoint", "temporal", "preprocess", *RUNTIME_ONLY))
def vocab_lint(
    labels_file: Annotated[Path, typer.Argument(help="Labels: .txt, .csv with a name column, or .json.")],
    template: Annotated[list[str] | None, typer.Option(help="Prompt template(s) (default the reference's).")] = None,
    clean_labels: Annotated[bool, typer.Option("--clean-labels", help="Lint the cleaned-up labels' prompts.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """What PUT /vocab would warn about, before sending it: labels the classifier will likely
    confuse (near duplicates, too-similar prompts) and prompts over the text encoder's limit
    (which the server refuses). Exit 0 with no finding, 1 with findings."""
    try:
        with warnings.catch_warnings(record=True) as header:
            warnings.simplefilter("always", LabelFileWarning)
            labels = label_args(None, labels_file, None)
        templates = validate_templates(template)
        base = validated(ModelOptions, {**(options or {}), "device": "cpu"})
        from text4vis.engine.runtime.loading import load_clip_for
        from text4vis.engine.vocab.lint import lint_labels
        from text4vis.models.text_encoder import TextEncoder

        report = lint_labels(TextEncoder(load_clip_for(base)), labels, templates, clean_labels)
    except (UsageProblem, InputError, ModelLoadError, ValueError) as exc:
        fail(exc)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "labels": report.labels,
                    "warnings": [
                        {"kind": w.kind, "labels": list(w.labels), "cosine": round(w.cosine, 4)}
                        for w in report.warnings
                    ],
                    "too_long": [{"label": t.label, "prompt": t.prompt, "tokens": t.tokens} for t in report.too_long],
                }
            )
        )
    else:
        for t in report.too_long:
            typer.echo(f"too long: {t.prompt!r} is {t.tokens} tokens; the text encoder takes {report.limit}")
        for w in report.warnings:
            typer.echo(f"{w.kind.replace('_', ' ')}: {w.labels[0]!r} and {w.labels[1]!r} (cosine {w.cosine:.3f})")
        typer.echo(f"{report.labels} labels: {len(report.warnings)} warnings, {len(report.too_long)} prompts too long")
    if report.warnings or report.too_long or header:
        raise typer.Exit(1)
