"""Training on generated videos (moving coloured squares), a tiny random CLIP, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from tests.training_data import make_dataset
from text4vis.models.classifiers import text_classifier
from text4vis.models.clip_loader import TINY_ARCH, ClipSource, load_clip
from text4vis.models.text_encoder import TextEncoder
from text4vis.models.training.classifier_init import projected_text_classifier
from text4vis.models.training.config import TrainConfig, parse_args
from text4vis.models.training.data import few_shot, read_samples
from text4vis.models.training.train import main
from text4vis.server.cli import app

CLASSES = ["moving right", "moving down", "moving left"]
HELD_OUT = ["moving up", "moving right"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("shapes")
    train_list, labels = make_dataset(root, CLASSES, per_class=4)
    return root, train_list, labels


def args(data: tuple[Path, Path, Path], out: Path, *extra: str) -> list[str]:
    root, train_list, labels = data
    return [
        "--train-list",
        str(train_list),
        "--labels",
        str(labels),
        "--root",
        str(root),
        "--model",
        TINY_ARCH,
        "--random-init",
        "--frames",
        "4",
        "--epochs",
        "4",
        "--warmup-epochs",
        # the reference's warm-up starts at lr 0 and sets the rate every 10 iterations: a
        # 1-epoch warm-up of 2 steps would train nothing
        "0",
        "--batch-size",
        "6",
        "--lr",
        "1e-3",
        "--lr-ratio",
        "1",
        "--no-rand-augment",
        "--workers",
        "0",
        "--output",
        str(out),
        *extra,
    ]


def losses(out: Path) -> list[float]:
    """Every step's loss, in order."""
    rows = [json.loads(line)["step_losses"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [loss for row in rows for loss in row]


@pytest.fixture(scope="module")
def smoke_run(data: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "smoke"
    main(args(data, out))
    return out


def test_smoke_loss_goes_down_and_classifier_stays_frozen(smoke_run: Path) -> None:
    rows = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    curve = [r["loss"] for r in rows]
    assert len(curve) == 4 and curve[-1] < curve[0] * 0.5, curve
    saved = torch.load(smoke_run / "last.pt", weights_only=False)
    clip = load_clip(ClipSource(arch=TINY_ARCH, random_init=True, seed=0))
    before = F.normalize(text_classifier(TextEncoder(clip), CLASSES), dim=-1)
    assert torch.equal(saved["classifier"], before)  # bit-identical after 4 epochs of training
    assert not any(
        torch.equal(saved["model_state_dict"][f"visual.{k}"], v)
        for k, v in clip.model.visual.state_dict().items()
        if v.ndim >= 2
    )  # the encoder did train
    assert (smoke_run / "metrics.png").stat().st_size > 1000
    assert saved["epoch"] == 4 and set(saved["model_state_dict"]) >= {"logit_scale", "visual.proj"}
    learned = saved["model_state_dict"]["logit_scale"]  # the learned scale, saved as the reference does
    assert learned.ndim == 0 and float(learned) != pytest.approx(float(clip.model.logit_scale.detach()), abs=1e-6)


def test_checkpoint_reloads_and_classifies(smoke_run: Path, data: tuple[Path, Path, Path]) -> None:
    root, train_list, labels = data
    video = root / "moving_left_0.mp4"
    r = CliRunner().invoke(
        app,
        [
            "classify",
            str(video),
            "--model",
            TINY_ARCH,
            "--random-init",
            "--text4vis-checkpoint",
            str(smoke_run / "last.pt"),
            "--labels-file",
            str(labels),
            "--frames",
            "4",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"]["temporal"] == "transf" and len(out["results"][0]["predictions"]) == 3
    e = CliRunner().invoke(
        app,
        [
            "eval",
            str(smoke_run / "last.pt"),
            "--list",
            str(train_list),
            "--labels",
            str(labels),
            "--root",
            str(root),
            "--model",
            TINY_ARCH,
            "--random-init",
            "--frames",
            "4",
            "--views",
            "2x3",
        ],
    )
    assert e.exit_code == 0, e.stderr
    result = json.loads(e.stdout)
    assert result["videos"] == 12 and 0 <= result["top1"] <= result["top5"] <= 1


def test_resume_reproduces_the_uninterrupted_run(
    smoke_run: Path, data: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "interrupted"
    main(args(data, out, "--stop-after", "2"))
    main(args(data, out, "--resume", str(out / "last.pt")))
    assert losses(out) == pytest.approx(losses(smoke_run), rel=1e-5)
    a = torch.load(smoke_run / "last.pt", weights_only=False)["model_state_dict"]
    b = torch.load(out / "last.pt", weights_only=False)["model_state_dict"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


@pytest.mark.slow
def test_ddp_two_processes_match_one(smoke_run: Path, data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """torchrun, 2 processes x 3 videos = the same global batch of 6: the same loss curve (gloo, CPU)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "text4vis.models.training.train",
        *args(data, out, "--epochs", "4", "--stop-after", "2"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert losses(out) == pytest.approx(losses(smoke_run)[:4], rel=1e-4)  # 2 epochs x 2 steps


def test_config_file_and_flags(tmp_path: Path, data: tuple[Path, Path, Path]) -> None:
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text(yaml.safe_dump({"train_list": "a.txt", "labels": "l.txt", "epochs": 7, "temporal": "mean"}))
    cfg = parse_args(
        [
            "--config",
            str(cfg_file),
            "--epochs",
            "3",
            "--warmup-epochs",
            "1",
            "--lr-ratio",
            "0.5",
            "--no-amp",
            "--betas",
            "0.8",
            "--betas",
            "0.99",
            "--templates",
            "a {}",
            "--templates",
            "b {}.",
        ]
    )
    assert (cfg.epochs, cfg.temporal, cfg.lr_ratio, cfg.amp) == (3, "mean", 0.5, False)
    assert cfg.betas == (0.8, 0.99) and cfg.templates == ["a {}", "b {}."]
    with pytest.raises(ValueError, match=r"warmup_epochs \(5\) must not exceed epochs \(3\)"):
        parse_args(["--config", str(cfg_file), "--epochs", "3"])
    toml = tmp_path / "train.toml"
    toml.write_text('train_list = "a.txt"\nlabels = "l.txt"\nclassifier = "orthogonal"\n')
    assert TrainConfig.load(toml, {}).classifier == "orthogonal"
    with pytest.raises(ValueError):
        TrainConfig.load(toml, {"epochs": 0})


def test_few_shot_protocol(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, train_list, _ = data
    samples = read_samples(train_list, CLASSES, root)
    chosen = few_shot(samples, 2, seed=3)
    assert len(chosen) == 6 and all(sum(s.label == c for s in chosen) == 2 for c in range(3))
    assert chosen == few_shot(samples, 2, seed=3) and chosen != few_shot(samples, 2, seed=4)
    # the reference repeats the K-shot list len(full) // len(selected) times: an epoch as long as the full data
    metrics = main(args(data, tmp_path / "fewshot", "--shots", "2", "--epochs", "1", "--warmup-epochs", "0"))
    assert metrics["epoch"] == 1 and len(metrics["step_losses"]) == (12 // 6) * 6 // 6  # 2 steps of 6


@pytest.mark.parametrize(("shots", "batch", "steps"), [(1, 8, 2), (1, 2, 6), (2, 16, 1)])
def test_few_shot_lists_keep_the_last_partial_batch(
    data: tuple[Path, Path, Path], tmp_path: Path, shots: int, batch: int, steps: int
) -> None:
    """3 classes x 1 shot at batch 8: the list (3) is repeated 12 // 3 = 4 times = 12 videos, a step
    of 8 and a partial step of 4 (the reference keeps the last partial batch); a list shorter than
    the batch is one partial step."""
    selected = 3 * shots
    repeated = selected * (12 // selected)
    assert steps == -(-repeated // batch)
    metrics = main(
        args(
            data,
            tmp_path / f"k{shots}b{batch}",
            "--shots",
            str(shots),
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--batch-size",
            str(batch),
        )
    )
    assert len(metrics["step_losses"]) == steps


def test_zero_shot_protocol_evaluates_unseen_classes(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    held = tmp_path / "held"
    val_list, val_labels = make_dataset(held, HELD_OUT, per_class=2, seed=9)
    val_list.write_text("".join(f"{held / line}\n" for line in val_list.read_text().splitlines()))  # absolute
    metrics = main(
        args(
            data,
            tmp_path / "zs",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--val-list",
            str(val_list),
            "--val-labels",
            str(val_labels),
        )
    )
    assert metrics["val_videos"] == 4 and 0 <= metrics["val_top1"] <= 1 and "val_mean_class_acc" in metrics


@pytest.mark.parametrize("kind", ["random", "orthogonal", "lda"])
def test_other_classifier_inits_train(kind: str, data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / kind
    main(args(data, out, "--classifier", kind, "--epochs", "1", "--warmup-epochs", "0", "--lda-shots", "2"))
    w = torch.load(out / "last.pt", weights_only=False)["classifier"]
    assert w.shape == (3, 64) and torch.allclose(w.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_projected_text_classifier() -> None:
    def fake_sentence_encoder(texts: list[str]) -> torch.Tensor:  # a deterministic 384-d "text model"
        return torch.stack([torch.tensor([float(ord(c)) for c in t.ljust(384)[:384]]) for t in texts])

    w = projected_text_classifier(fake_sentence_encoder, ["yoga", "surfing"], dim=64, seed=1)
    assert w.shape == (2, 64) and torch.allclose(w.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(w, projected_text_classifier(fake_sentence_encoder, ["yoga", "surfing"], 64, 1))


def test_unfreeze_classifier_ablation_changes_it(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "unfrozen"
    main(args(data, out, "--unfreeze-classifier", "--epochs", "2", "--warmup-epochs", "0", "--stop-after", "1"))
    first = torch.load(out / "last.pt", weights_only=False)["classifier"]
    main(
        args(
            data,
            out,
            "--unfreeze-classifier",
            "--epochs",
            "2",
            "--warmup-epochs",
            "0",
            "--resume",
            str(out / "last.pt"),
        )
    )
    assert not torch.equal(first, torch.load(out / "last.pt", weights_only=False)["classifier"])


def test_t4v_train_cli_exports_an_engine(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    r = CliRunner().invoke(
        app,
        ["train", *args(data, out, "--epochs", "1", "--warmup-epochs", "0"), "--temporal", "mean", "--export-engine"],
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["epoch"] == 1
    manifest = json.loads((out / "engine" / "manifest.json").read_text())
    assert manifest["temporal"] == "mean" and manifest["source"]["text4vis_checkpoint"] == str(out / "last.pt")
    bad = CliRunner().invoke(app, ["train", "--labels", "x.txt"])
    assert bad.exit_code == 2 and "train_list" in bad.stderr


def test_t4v_eval_zero_shot_halves_protocol(smoke_run: Path, tmp_path: Path) -> None:
    """Full-class accuracy and the mean +- std over the reference's 10 half-class splits, checked
    against a direct numpy computation of the splits from the per-video probabilities."""
    import numpy as np

    classes = ["moving right", "moving down", "moving left", "moving up"]
    root = tmp_path / "zs4"
    val_list, labels = make_dataset(root, classes, per_class=3, seed=5)
    preds = tmp_path / "preds.jsonl"
    r = CliRunner().invoke(
        app,
        [
            "eval",
            str(smoke_run / "last.pt"),
            "--list",
            str(val_list),
            "--labels",
            str(labels),
            "--root",
            str(root),
            "--model",
            TINY_ARCH,
            "--random-init",
            "--frames",
            "4",
            "--protocol",
            "zeroshot-halves",
            "--predictions",
            str(preds),
        ],
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert "10 half-class splits" in r.stderr and len(out["half_splits_top1"]) == 10
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    probs = np.array(
        [[next(p["probability"] for p in row["predictions"] if p["label"] == c) for c in classes] for row in rows]
    )
    truth = np.array([classes.index(row["label"]) for row in rows])
    accuracies = []
    for split in range(10):  # the reference's rule: among the drawn classes the kept videos have
        np.random.seed(split)
        drawn = np.random.permutation(len(classes))[: len(classes) // 2]
        rows_kept = np.isin(truth, drawn)
        subclasses = np.unique(truth[rows_kept])
        predicted = subclasses[probs[rows_kept][:, subclasses].argmax(axis=1)]
        accuracies.append(float((predicted == truth[rows_kept]).mean()))
    assert out["half_splits_top1"] == pytest.approx(accuracies)
    assert len(out["half_splits_top5"]) == 10 and out["half_splits_top5_mean"] >= out["half_splits_mean"]
    assert out["half_splits_mean"] == pytest.approx(np.mean(accuracies))
    assert out["half_splits_std"] == pytest.approx(np.std(accuracies))
    assert out["top1"] == pytest.approx(float((probs.argmax(axis=1) == truth).mean()))


def test_t4v_eval_several_splits_reports_mean_and_std(smoke_run: Path, tmp_path: Path) -> None:
    """The Kinetics-600 zero-shot protocol in one command: three (list, labels) splits, each split's
    accuracy and their mean +- std, equal to evaluating each split on its own."""
    import numpy as np

    splits = [["moving right", "moving down"], ["moving left", "moving up"], ["moving down", "moving left"]]
    args: list[str] = []
    alone = []
    for number, classes in enumerate(splits):
        root = tmp_path / f"split{number}"
        val_list, labels = make_dataset(root, classes, per_class=2, seed=number)
        val_list.write_text("".join(f"{root / line}\n" for line in val_list.read_text().splitlines()))
        args += ["--list", str(val_list), "--labels", str(labels)]
        one = CliRunner().invoke(
            app,
            [
                "eval",
                str(smoke_run / "last.pt"),
                "--list",
                str(val_list),
                "--labels",
                str(labels),
                "--model",
                TINY_ARCH,
                "--random-init",
                "--frames",
                "4",
            ],
        )
        assert one.exit_code == 0, one.stderr
        alone.append(json.loads(one.stdout))
    r = CliRunner().invoke(
        app, ["eval", str(smoke_run / "last.pt"), *args, "--model", TINY_ARCH, "--random-init", "--frames", "4"]
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert [s["top1"] for s in out["splits"]] == pytest.approx([a["top1"] for a in alone])
    assert out["top1_mean"] == pytest.approx(np.mean([a["top1"] for a in alone]))
    assert out["top1_std"] == pytest.approx(np.std([a["top1"] for a in alone]))
    assert "3 splits: top-1" in r.stderr and "split 2: top-1" in r.stderr
    mismatched = CliRunner().invoke(
        app, ["eval", str(smoke_run / "last.pt"), *args[:6], "--model", TINY_ARCH, "--random-init"]
    )
    assert mismatched.exit_code == 2 and "one --labels per --list" in mismatched.stderr


def test_train_infers_the_architecture_of_an_openai_format_clip_file(
    data: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The OpenAI-format CLIP file classify and serve accept trains too, without naming an arch."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH)
    weights = tmp_path / "openai-format.pt"
    torch.save(model.state_dict(), weights)  # OpenAI key names: conv1, transformer.resblocks..., text_projection
    root, train_list, labels = data
    metrics = main(
        [
            "--train-list",
            str(train_list),
            "--labels",
            str(labels),
            "--root",
            str(root),
            "--clip-checkpoint",
            str(weights),
            "--frames",
            "4",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--batch-size",
            "6",
            "--workers",
            "0",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["epoch"] == 1
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model"] is None and config["pretrained"] is None


def test_a_runs_checkpoint_finds_its_own_base(smoke_run: Path, data: tuple[Path, Path, Path]) -> None:
    """t4v eval RUN/last.pt with no --model: the run's config.json names its base CLIP (here the
    tiny random one), so nothing asks the hub; the numbers are those of naming it explicitly."""
    root, train_list, labels = data
    common = [
        "eval",
        str(smoke_run / "last.pt"),
        "--list",
        str(train_list),
        "--labels",
        str(labels),
        "--root",
        str(root),
        "--frames",
        "4",
    ]
    implicit = CliRunner().invoke(app, common)
    explicit = CliRunner().invoke(app, [*common, "--model", TINY_ARCH, "--random-init"])
    assert implicit.exit_code == 0 and explicit.exit_code == 0, implicit.stderr
    assert json.loads(implicit.stdout) == json.loads(explicit.stdout)


def test_t4v_eval_shots_from_the_archive_and_from_files(
    tmp_path: Path, tiny_clip_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`t4v eval --shots K` on a labelled list, without a checkpoint (plain CLIP): the videos the
    archive holds are read from it (the same table as decoding them would give: the same figures),
    and the examples lift the random text classifier."""
    classes = ["moving right", "moving down", "moving left"]
    root = tmp_path / "shots"
    val_list, labels = make_dataset(root, classes, per_class=4, seed=7)
    model = ["--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path), "--frames", "4"]
    base = ["eval", "--list", str(val_list), "--labels", str(labels), "--root", str(root), "--shots", "2"]
    archive = tmp_path / "archive"
    cold = CliRunner().invoke(app, [*base, "--draws", "3", "--archive", str(archive), *model])
    assert cold.exit_code == 0, cold.stderr
    result = json.loads(cold.stdout)
    assert result["examples_per_draw"] == 6 and result["videos"] == 12 and result["draws"] == 3
    assert "tip-adapter: top-1" in cold.stderr and "prototype: top-1" in cold.stderr
    assert result["prototype"]["top1_mean"] >= result["zero-shot"]["top1_mean"]
    videos = [str(root / line.split()[0]) for line in val_list.read_text().splitlines()]
    indexed = CliRunner().invoke(app, ["index", *videos, "--archive", str(archive), *model])
    assert indexed.exit_code == 0, indexed.stderr
    from text4vis.server import cli_examples

    def no_decoding(*args: object) -> None:
        raise AssertionError("a stored video was decoded again")

    monkeypatch.setattr(cli_examples, "_embedded", no_decoding)
    warm = CliRunner().invoke(app, [*base, "--draws", "3", "--archive", str(archive), *model])
    assert warm.exit_code == 0, warm.stderr
    assert json.loads(warm.stdout) == result  # read from the archive: the same figures, nothing decoded
    alone = CliRunner().invoke(app, ["eval", "--list", str(val_list), "--labels", str(labels), *model])
    assert alone.exit_code == 2 and "give the checkpoint to evaluate" in alone.stderr
