"""``t4v train``, ``t4v eval`` and ``t4v export``: fine-tuning, evaluation and engine export."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from text4vis.engine.options import ModelOptions
from text4vis.models.choices import ExportFormat, Precision
from text4vis.models.cli_options import with_options
from text4vis.models.errors import InputError, ModelLoadError, T4VError
from text4vis.models.training.config import collect
from text4vis.server.cli_common import (
    DEFAULT_ARCHIVE,
    RUNTIME_ONLY,
    UsageProblem,
    check_views,
    choice,
    fail,
    validated,
)
from text4vis.server.cli_examples import list_embeddings


def register(app: typer.Typer) -> None:
    app.command("train", help=collect.__doc__)(train)
    app.command("eval")(evaluate_command)
    app.command()(export)


@functools.wraps(collect)
def train(**kwargs: Any) -> None:
    """Fine-tune the visual encoder against a frozen text classifier: t4v train --config FILE [--field value ...].

    Every config field is a flag; torchrun runs the same on several GPUs or nodes:
    torchrun --nproc_per_node 8 -m text4vis.models.training.train --config FILE. With --export-engine the
    final checkpoint is exported to OUTPUT/engine (ONNX)."""
    from text4vis.models.training.train import train as run

    logging.getLogger("text4vis.models.training").setLevel(logging.INFO)  # each epoch's loss, without -v
    try:
        cfg = collect(**kwargs)
        metrics = run(cfg)  # checks its files and weights first, before anything loads
    except (ModelLoadError, InputError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "step_losses"}))
    if cfg.export_engine:
        from text4vis.engine.runtime.export import export_from_options

        options = ModelOptions(
            model=cfg.model,
            pretrained=cfg.pretrained,
            clip_checkpoint=cfg.clip_checkpoint,
            activation=cfg.activation,
            random_init=cfg.random_init,
            text4vis_checkpoint=cfg.output / "last.pt",
        )
        manifest = export_from_options(options, cfg.output / "engine")
        typer.echo(f"engine: {cfg.output / 'engine'} ({manifest.temporal} head)")


@with_options(ModelOptions, exclude=("text4vis_checkpoint", "temporal", "preprocess", *RUNTIME_ONLY))
def evaluate_command(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="A Text4Vis-layout checkpoint (e.g. OUTPUT/last.pt); with --shots it may be left out (plain CLIP).",
            show_default=False,
        ),
    ] = None,
    list_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--list", help="'path label' lines or a folder per class; repeat it with --labels for several splits."
        ),
    ] = None,
    labels_files: Annotated[
        list[Path] | None,
        typer.Option("--labels", help="Class names (.csv id,name or .txt), one per --list, in the same order."),
    ] = None,
    root: Annotated[Path | None, typer.Option(help="Prefix of relative paths in the list.")] = None,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 8,
    views: Annotated[str, typer.Option(help="CLIPSxCROPS: 1x1 or 4x3.")] = "1x1",
    template: Annotated[list[str] | None, typer.Option(help="Prompt template(s).")] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Also write one JSON line per video: file, label, top-5 probabilities.")
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="standard, or zeroshot-halves: also the mean +- std top-1 over 10 random half-class splits "
            "(UCF-101/HMDB-51, as the reference)."
        ),
    ] = "standard",
    shots: Annotated[
        int,
        typer.Option(
            help="Few-shot: K examples per class drawn from the list, the rest scored: zero-shot vs prototype vs "
            "tip-adapter (fitted by leave-one-out), mean +- std over --draws."
        ),
    ] = 0,
    draws: Annotated[int, typer.Option(help="With --shots: how many seeded draws of the examples.")] = 5,
    archive: Annotated[
        str, typer.Option(help="With --shots: videos stored here under this model are not decoded again.")
    ] = DEFAULT_ARCHIVE,
    options: dict[str, Any] | None = None,
) -> None:
    """Top-1, top-5 and mean class accuracy of a checkpoint (single view or multi-view). It sees the
    pixels the server sees: its probabilities are the server's for the same clip and checkpoint.
    Several --list/--labels pairs (the three 160-class Kinetics-600 zero-shot splits) print each
    split and the mean +- std over them, as the paper reports them. With --shots K: the few-shot
    table (zero-shot, prototype, tip-adapter) from the videos' embeddings."""
    from text4vis.models.training.evaluate import evaluate_checkpoint

    if not list_files or not labels_files:
        fail(UsageProblem("give --list and --labels (one --labels per --list)"))
    assert list_files is not None and labels_files is not None
    if shots:
        _few_shot_eval(
            checkpoint, list_files, labels_files, root, frames, views, template, shots, draws, archive, options
        )
        return
    try:
        if checkpoint is None:
            raise UsageProblem("give the checkpoint to evaluate (it may be left out only with --shots)")
        clips, crops = check_views(views)
        if protocol not in ("standard", "zeroshot-halves"):
            raise UsageProblem(f"--protocol must be standard or zeroshot-halves; got {protocol!r}")
        if len(list_files) != len(labels_files):
            raise UsageProblem(
                f"give one --labels per --list: {len(list_files)} lists, {len(labels_files)} label files"
            )
        base = validated(ModelOptions, options or {})
        source = base.clip_source(checkpoint=checkpoint)  # a run's checkpoint finds its own base
        result = evaluate_checkpoint(
            checkpoint,
            list(zip(list_files, labels_files, strict=True)),
            clip_source=source,
            templates=template,
            frames=frames,
            clips=clips,
            crops=crops,
            root=root,
            predictions=predictions,
            half_splits=10 if protocol == "zeroshot-halves" else 0,
        )
    except (UsageProblem, ModelLoadError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    if "splits" in result:
        for number, split in enumerate(result["splits"], 1):
            sys.stderr.write(
                f"split {number}: top-1 {100 * split['top1']:.2f}%, top-5 {100 * split['top5']:.2f}% "
                f"({split['videos']} videos)\n"
            )
        sys.stderr.write(
            f"{len(result['splits'])} splits: top-1 {100 * result['top1_mean']:.2f} +- "
            f"{100 * result['top1_std']:.2f}%, top-5 {100 * result['top5_mean']:.2f} +- "
            f"{100 * result['top5_std']:.2f}%\n"
        )
    elif protocol == "zeroshot-halves":
        sys.stderr.write(
            f"zero-shot: full-class top-1 {100 * result['top1']:.2f}%; 10 half-class splits "
            f"top-1 {100 * result['half_splits_mean']:.2f} +- {100 * result['half_splits_std']:.2f}%, "
            f"top-5 {100 * result['half_splits_top5_mean']:.2f} +- {100 * result['half_splits_top5_std']:.2f}%\n"
        )
    typer.echo(json.dumps(result))


def _few_shot_eval(
    checkpoint: Path | None,
    list_files: list[Path],
    labels_files: list[Path],
    root: Path | None,
    frames: int,
    views: str,
    templates: list[str] | None,
    shots: int,
    draws: int,
    archive: str,
    options: dict[str, Any] | None,
) -> None:
    """``t4v eval --shots K``: the list's embeddings (from the archive when stored, else embedded
    here), then the few-shot protocol (``engine/vocab/few_shot_eval.py``)."""
    import numpy as np

    from text4vis.engine.facade import Engine
    from text4vis.engine.request import ClassifyRequest, ClipSpec, RequestLimits
    from text4vis.models.prompts import read_labels
    from text4vis.models.training.data import read_samples

    try:
        if len(list_files) != 1 or len(labels_files) != 1:
            raise UsageProblem("--shots takes one --list and one --labels")
        clip = ClipSpec(frames, views).resolve(RequestLimits(max_frames=64, max_views="16x3"))
        classes = read_labels(labels_files[0])
        samples = read_samples(list_files[0], classes, root)
        given = {**(options or {}), "text4vis_checkpoint": checkpoint} if checkpoint else (options or {})
        from text4vis.engine.runtime.build import build_runtime
        from text4vis.engine.vocab.few_shot_eval import evaluate_shots
        from text4vis.engine.vocab.registry import VocabRegistry
        from text4vis.engine.vocab.stores.sqlite import SQLiteStore

        runtime = build_runtime(validated(ModelOptions, given))
        engine = Engine(runtime, VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder))
        request = ClassifyRequest(labels=tuple(classes), templates=tuple(templates) if templates else None)
        classifier = engine.resolve_blocking(request).classifier
        embeddings = list_embeddings(runtime, [s.path for s in samples], archive, clip)
        result = evaluate_shots(classifier, embeddings, np.array([s.label for s in samples]), shots, draws)
    except (T4VError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    for method in ("zero-shot", "prototype", "tip-adapter"):
        m = result[method]
        sys.stderr.write(
            f"{method}: top-1 {100 * m['top1_mean']:.2f} +- {100 * m['top1_std']:.2f}%, "
            f"top-5 {100 * m['top5_mean']:.2f} +- {100 * m['top5_std']:.2f}%\n"
        )
    typer.echo(json.dumps(result))


@with_options(ModelOptions, exclude=RUNTIME_ONLY)
def export(
    out: Annotated[Path, typer.Option(help="Engine directory to write.")],
    format: Annotated[
        ExportFormat, typer.Option("--format", help="onnx | tensorrt (TensorRT also writes the ONNX).")
    ] = ExportFormat.ONNX,
    graph_precision: Annotated[str, typer.Option("--precision", help="fp32 | fp16 (the graph's precision).")] = "fp32",
    max_batch: Annotated[int, typer.Option(help="Largest batch of frames (the dynamic axis' bound).")] = 64,
    force: Annotated[
        bool, typer.Option(help="Rewrite everything, even what OUT already holds for these weights.")
    ] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Export the visual encoder (+ temporal head) to an engine directory that serve/classify run.

    Run again with --format tensorrt on each GPU model: what OUT holds for the same weights is
    kept, and a plan for this GPU and TensorRT version is added beside the others."""
    from text4vis.engine.runtime.export import export_from_options

    # its stages (minutes on a CPU), without -v
    logging.getLogger("text4vis.engine.runtime.export").setLevel(logging.INFO)
    try:
        model_options = validated(ModelOptions, {**(options or {}), "device": "cpu"})
        choice("--precision", graph_precision, ("fp32", "fp16"))  # an exported graph is never bf16 or auto
        manifest = export_from_options(model_options, out, format, Precision(graph_precision), max_batch, force=force)
    except (UsageProblem, ModelLoadError, InputError, ValueError, RuntimeError) as exc:
        fail(exc)
    files = [*manifest.files.values(), *manifest.plans.values()]
    typer.echo(
        f"wrote {out}: {', '.join(files)} ({manifest.architecture}, {manifest.temporal} "
        f"head, {manifest.precision}, batch 1..{manifest.max_batch})"
    )
