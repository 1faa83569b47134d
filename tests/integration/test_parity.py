"""Whole-pipeline parity with reference computations on the same (tiny, random) weights."""

import json
from pathlib import Path

import av
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from typer.testing import CliRunner

from tests.checkpoints import prefixed_state, reference_transf, trained_like
from tests.conftest import shared_path
from tests.media import moving_square_frames, write_video
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.models.prompts import KINETICS_TEMPLATES
from text4vis.models.temporal import TransformerHead
from text4vis.server.cli import app

LABELS = ["arm wrestling", "ApplyEyeMakeup", "playing guitar", "riding a bike", "yoga", "surfing water"]


def run_cli(*args: str) -> dict:
    result = CliRunner().invoke(app, ["classify", *args, "--json", "--top-k", "0"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def probs_by_label(out: dict, i: int = 0) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in out["results"][i]["predictions"]}


@pytest.mark.parametrize("templates", [None, "kinetics"])
def test_image_matches_open_clip_zero_shot(tiny_clip_path: Path, tmp_path: Path, templates: str | None) -> None:
    frame = _first_frame()
    image = tmp_path / "frame.png"
    Image.fromarray(frame).save(image)
    args = [str(image), "--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path), "--labels", ",".join(LABELS)]
    if templates:
        args += ["--template-set", templates]
    ours = probs_by_label(run_cli(*args))

    model, _, preprocess = open_clip.create_model_and_transforms(TINY_ARCH, pretrained=str(tiny_clip_path))
    model.eval()
    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    names = LABELS  # as written, as the reference prompts them
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            model,
            tokenizer,
            names,
            list(KINETICS_TEMPLATES) if templates else ["a video of a person {}."],
            num_classes_per_batch=4,
            device="cpu",
            use_tqdm=False,
        )
        feats = F.normalize(model.encode_image(preprocess(Image.open(image)).unsqueeze(0)), dim=-1)
        ref = (100.0 * feats @ classifier).softmax(dim=-1)[0]
    diff = max(abs(ours[label] - float(ref[i])) for i, label in enumerate(LABELS))
    print(f"max |p_ours - p_open_clip| = {diff:.2e}")
    assert diff <= 1e-5
    assert max(ours.values()) - min(ours.values()) > 1e-3  # the check is not trivially flat


def _first_frame() -> np.ndarray:
    with av.open(str(shared_path("videos", "arm_wrestling.mp4"))) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.parametrize(
    ("arch", "size", "video"),
    [
        (TINY_ARCH, 224, "arm_wrestling.mp4"),  # landscape, 224 px: short side to 256, crops left/right/center
        ("t4v-tiny-vit-336", 336, "portrait"),  # 336 px: short side to 336 (S = C); portrait: crops along the width
    ],
)
def test_text4vis_checkpoint_multiview_matches_reference(
    tiny_clip_path: Path, tmp_path: Path, arch: str, size: int, video: str
) -> None:
    """A released-layout checkpoint with a T-Trans head, 4x3 views, against the DESIGN.md recipe
    computed independently: PyAV full decode, PIL resize/crops, the head written out by hand."""
    torch.manual_seed(11)
    clip_path = tiny_clip_path
    if arch != TINY_ARCH:
        clip_path = tmp_path / "clip336.pt"
        torch.save(open_clip.create_model(arch).state_dict(), clip_path)
    clip = open_clip.create_model(arch, pretrained=str(clip_path)).eval()
    visual = open_clip.create_model(arch).visual.eval()  # "fine-tuned" visual: other weights
    head = trained_like(TransformerHead(64))
    ckpt = tmp_path / "text4vis.pt"
    torch.save({"epoch": 29, "model_state_dict": prefixed_state(visual, head)}, ckpt)

    if video == "portrait":
        path = write_video(tmp_path / "portrait.mp4", moving_square_frames(40, 240, 400, seed=3))
    else:
        path = shared_path("videos", video)
    out = run_cli(
        str(path),
        "--model",
        arch,
        "--clip-checkpoint",
        str(clip_path),
        "--text4vis-checkpoint",
        str(ckpt),
        "--labels",
        ",".join(LABELS),
        "--views",
        "4x3",
        "--decoder",
        "pyav",
    )
    assert out["model"]["temporal"] == "transf" and out["model"]["preprocess"] == "text4vis"

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    n, t, clips = len(frames), 8, 4
    tick = n / t
    starts = np.linspace(0, tick - 1, clips).astype(int)
    indices = [[int(s + tick * x) % n for x in range(t)] for s in starts]
    assert out["results"][0]["frame_indices"] == [i for clip in indices for i in clip]
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)])
    short = 256 if size == 224 else size  # S = 256 if C == 224 else C
    views = []
    sd = {k: v.detach() for k, v in head.state_dict().items()}
    with torch.no_grad():
        for clip_idx in indices:
            scaled = [
                T.Resize(short, interpolation=T.InterpolationMode.BICUBIC)(Image.fromarray(frames[i])) for i in clip_idx
            ]
            w, h = scaled[0].size
            w_step, h_step = (w - size) // 4, (h - size) // 4
            for left in (0, 2 * w_step, 4 * w_step):  # GroupFullResSample: along the width, whatever the shape
                top = 2 * h_step
                pixels = torch.stack([to_tensor(im.crop((left, top, left + size, top + size))) for im in scaled])
                views.append(reference_transf(sd, visual(pixels)[None], layers=6, heads=128 // 64)[0])  # text width
        video_emb = F.normalize(torch.stack(views).mean(0), dim=-1)
        text = F.normalize(
            clip.encode_text(open_clip.get_tokenizer(arch)([f"a video of a person {x}." for x in LABELS])), dim=-1
        )  # labels as written
        ref = (100.0 * video_emb @ text.T).softmax(-1)
    ours = probs_by_label(out)
    diff = max(abs(ours[label] - float(ref[i])) for i, label in enumerate(LABELS))
    print(f"max |p_ours - p_reference| = {diff:.2e}")
    assert diff <= 1e-4
    assert max(ours.values()) - min(ours.values()) > 1e-3  # the check is not trivially flat
