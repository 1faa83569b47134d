"""`t4v classify` as a user runs it: a real process, real files, exit codes and stderr."""

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import shared_path
from text4vis.engine.facade import TIMING_KEYS
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.server.cli import app

T4V = [sys.executable, "-m", "text4vis.server.cli"]


def t4v(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*T4V, *args], capture_output=True, text=True, timeout=300)


def assert_clean_failure(proc_or_result, fragment: str, expected: int = 2) -> None:  # noqa: ANN001
    """One line on stderr, no traceback; exit 2 for bad usage, 1 for files that could not be classified."""
    code = getattr(proc_or_result, "returncode", getattr(proc_or_result, "exit_code", None))
    stderr = proc_or_result.stderr.strip()
    assert code == expected, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("error: ") and fragment in stderr, stderr


@pytest.fixture(scope="module")
def base_args(tiny_clip_path: Path) -> list[str]:
    return ["--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path), "--labels", "arm wrestling,yoga,surfing"]


def test_classify_json_on_real_clips(base_args: list[str], tmp_path: Path) -> None:
    clips = [shared_path("videos", "arm_wrestling.mp4"), shared_path("videos", "ucf101_sample_320x240.avi")]
    proc = t4v("classify", *map(str, clips), *base_args, "--json", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [r["file"] for r in out["results"]] == list(map(str, clips))
    first = out["results"][0]
    assert first["frame_indices"] == [0, 35, 70, 105, 140, 175, 210, 245]
    assert len(first["predictions"]) == 2
    probs = [p["probability"] for p in first["predictions"]]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    assert out["model"]["arch"] == TINY_ARCH and out["model"]["temporal"] == "mean"
    assert list(first["timing_ms"]) == list(TIMING_KEYS)  # the server's keys (engine/facade.py)


def test_not_a_video(base_args: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "report.mp4"
    bad.write_text("this is text, not a video\n" * 50)
    assert_clean_failure(t4v("classify", str(bad), *base_args), "not a video or image", 1)


def test_truncated_video(base_args: list[str], tmp_path: Path) -> None:
    """Cut in half: the index at the end is gone (cut.mp4), or the index is at the front and the
    frames it lists are gone (fastcut.mp4, written with +faststart)."""
    src = shared_path("videos", "k400_sample_340x256.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    fast = tmp_path / "fast.mp4"
    with av.open(str(src)) as inp, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    fastcut = tmp_path / "fastcut.mp4"
    fastcut.write_bytes(fast.read_bytes()[: len(fast.read_bytes()) // 2])
    assert_clean_failure(t4v("classify", str(cut), *base_args), "cut.mp4", 1)
    for decoder in ("auto", "pyav", "decord"):
        proc = t4v("classify", str(fastcut), *base_args, "--decoder", decoder)
        assert_clean_failure(proc, "fastcut.mp4: truncated or corrupt video", 1)


def test_a_bad_file_does_not_stop_the_batch(base_args: list[str], tmp_path: Path) -> None:
    """Every file that can be classified is; each failure is one line (and a result with an error
    in --json); exit 1. Without a terminal, one progress line per file goes to stderr."""
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    good = shared_path("videos", "arm_wrestling.mp4")
    other = shared_path("videos", "ucf101_sample_320x240.avi")
    proc = t4v("classify", str(fake), str(good), str(other), *base_args, "--json")
    assert proc.returncode == 1, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [r["file"] for r in results] == [str(fake), str(good), str(other)]
    assert "not a video or image" in results[0]["error"] and "predictions" not in results[0]
    assert all(r["predictions"] for r in results[1:])
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr and sum(line.startswith("error: ") for line in lines) == 1
    assert "classified 1/2 files" in lines and "classified 2/2 files" in lines


def test_unknown_architecture(tmp_path: Path) -> None:
    clip = shared_path("videos", "arm_wrestling.mp4")
    assert_clean_failure(t4v("classify", str(clip), "--model", "ViT-Q-99", "--labels", "a,b"), "unknown architecture")


def test_checkpoint_that_does_not_fit(tiny_clip_path: Path) -> None:
    clip = shared_path("videos", "arm_wrestling.mp4")
    proc = t4v("classify", str(clip), "--model", "ViT-B-32", "--clip-checkpoint", str(tiny_clip_path), "--labels", "a")
    assert_clean_failure(proc, "does not fit the model")


def invoke(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, ["classify", *args])


def test_empty_file(base_args: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert_clean_failure(invoke(str(empty), *base_args), "empty", 1)


def test_missing_file(base_args: list[str], tmp_path: Path) -> None:
    assert_clean_failure(invoke(str(tmp_path / "nope.mp4"), *base_args), "not found", 1)


def test_damaged_text4vis_checkpoint(base_args: list[str], tmp_path: Path) -> None:
    ckpt = tmp_path / "t4v.pt"
    torch.save({"epoch": 1, "model_state_dict": {"module.visual.proj": torch.zeros(3, 3)}}, ckpt)
    clip = shared_path("videos", "arm_wrestling.mp4")
    result = invoke(str(clip), *base_args, "--text4vis-checkpoint", str(ckpt))
    assert_clean_failure(result, "missing keys")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--views", "4x2"], "crops 1 or 3"),
        (["--temporal", "transf"], "needs trained weights"),
        (["--temporal", "lstm"], "--temporal must be one of"),
        (["--template", "no placeholder"], "placeholder"),
        (["--frames", "0"], "frames must be"),
        (["--labels-file", "missing.csv"], "exactly one of"),
    ],
)
def test_bad_options(base_args: list[str], extra: list[str], fragment: str) -> None:
    clip = shared_path("videos", "arm_wrestling.mp4")
    assert_clean_failure(invoke(str(clip), *base_args, *extra), fragment)


def test_duplicate_labels(tiny_clip_path: Path) -> None:
    clip = shared_path("videos", "arm_wrestling.mp4")
    result = invoke(str(clip), "--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path), "--labels", "a,b,a")
    assert_clean_failure(result, "duplicate labels: a")


def test_labels_file_and_table_output(tiny_clip_path: Path) -> None:
    clip = shared_path("videos", "ucf101_sample_320x240.avi")
    labels = shared_path("labels", "ucf_labels.csv")
    result = invoke(
        str(clip),
        "--model",
        TINY_ARCH,
        "--clip-checkpoint",
        str(tiny_clip_path),
        "--labels-file",
        str(labels),
        "--top-k",
        "3",
    )
    assert result.exit_code == 0, result.stderr
    assert "probability" in result.stdout and str(clip) in result.stdout


def test_labels_follow_the_servers_rules(tiny_clip_path: Path, synthetic_video: Path) -> None:
    """A prompt over the text encoder's 77 tokens is refused, as PUT /vocab refuses it (not truncated)."""
    long_label = " ".join(["x"] * 100)  # 199 characters (under the 300 allowed), 100 tokens
    base = ["classify", str(synthetic_video), "--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path)]
    result = CliRunner().invoke(app, [*base, "--labels", f"yoga,{long_label}"])
    assert_clean_failure(result, "tokens; the text encoder takes 77")
    result = CliRunner().invoke(app, [*base, "--labels", "yoga, yoga"])
    assert_clean_failure(result, "duplicate labels: yoga")


def test_vocab_lint_offline(tiny_clip_path: Path, tmp_path: Path) -> None:
    """`t4v vocab lint FILE`: what PUT /vocab would warn about (and refuse), before sending it."""
    labels = tmp_path / "labels.txt"
    labels.write_text("surfing\nSurfing!\nyoga\n" + "word " * 80 + "\n")
    r = CliRunner().invoke(
        app, ["vocab", "lint", str(labels), "--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path), "--json"]
    )
    assert r.exit_code == 1, r.output  # findings
    out = json.loads(r.stdout)
    assert out["labels"] == 4
    assert out["warnings"][0]["kind"] == "near_duplicate" and out["warnings"][0]["labels"] == ["surfing", "Surfing!"]
    assert len(out["too_long"]) == 1 and out["too_long"][0]["tokens"] > 77
    clean = tmp_path / "clean.txt"
    clean.write_text("surfing\nyoga\n")
    ok = CliRunner().invoke(
        app, ["vocab", "lint", str(clean), "--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path)]
    )
    assert ok.exit_code == 0 and ok.stdout.strip() == "2 labels: 0 warnings, 0 prompts too long"


def test_a_text4vis_checkpoint_alone_says_it_needs_its_base(tmp_path: Path) -> None:
    """``t4v classify --text4vis-checkpoint X`` alone answered the hub's error; now one line says
    the checkpoint holds no text tower, which base it runs on, and how to give that base."""
    ckpt = tmp_path / "t4v.pt"
    torch.save({"epoch": 1, "model_state_dict": {"module.visual.proj": torch.zeros(3, 3)}}, ckpt)
    clip = shared_path("videos", "arm_wrestling.mp4")
    result = invoke(str(clip), "--labels", "a,b", "--text4vis-checkpoint", str(ckpt))
    assert_clean_failure(result, "holds the visual encoder and the temporal head but no text tower")
    assert "ViT-B-16/openai" in result.stderr and "--clip-checkpoint PATH" in result.stderr


def test_without_weights_the_advice_fits_the_command(tmp_path: Path) -> None:
    """``t4v vocab lint`` without weights (no hub here) suggested ``make serve``; the advice now
    names the flags of the command that was run."""
    labels = tmp_path / "labels.txt"
    labels.write_text("running\nwalking\n")
    result = CliRunner().invoke(app, ["vocab", "lint", str(labels)])
    assert_clean_failure(result, "--model ViT-B-32 --random-init")
    assert "make serve" not in result.stderr


def test_the_sample_clip_is_what_the_readme_sends(tmp_path: Path, live_server: str) -> None:
    """The README's first request needs a clip a newcomer may not have: ``t4v sample`` writes one,
    and the README's curl classifies it (a file already there is not overwritten)."""
    import httpx

    clip = tmp_path / "clip.mp4"
    made = CliRunner().invoke(app, ["sample", str(clip)])
    assert made.exit_code == 0 and clip.stat().st_size > 1000, made.output
    again = CliRunner().invoke(app, ["sample", str(clip)])
    assert again.exit_code == 2 and "exists already" in again.stderr
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "t4v sample clip.mp4" in readme and "curl -F file=@clip.mp4 -F vocab=sports" in readme
    httpx.put(f"{live_server}/vocab/sports", json={"labels": ["arm wrestling", "surfing", "yoga"]}).raise_for_status()
    r = httpx.post(
        f"{live_server}/classify",
        files={"file": ("clip.mp4", clip.read_bytes())},
        data={"vocab": "sports", "top_k": "3"},
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text
