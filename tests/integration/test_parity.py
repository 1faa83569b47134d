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

from models.clip_loader import TINY_ARCH
from models.prompts import KINETICS_TEMPLATES, clean_label
from models.temporal import TransformerHead
from server.cli import app
from tests.checkpoints import prefixed_state, reference_transf, trained_like
from tests.conftest import shared_path

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
    names = [clean_label(x) for x in LABELS]
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(
            model, tokenizer, names, list(KINETICS_TEMPLATES) if templates else ["a video of a person {}."],
            num_classes_per_batch=4, device="cpu", use_tqdm=False,
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


def test_text4vis_checkpoint_multiview_matches_reference(tiny_clip_path: Path, tmp_path: Path) -> None:
    """A released-layout checkpoint with a T-Trans head, 4x3 views, against the DESIGN.md recipe
    computed independently: PyAV full decode, PIL resize/crops, the head written out by hand."""
    torch.manual_seed(11)
    clip = open_clip.create_model(TINY_ARCH, pretrained=str(tiny_clip_path)).eval()
    visual = open_clip.create_model(TINY_ARCH).visual.eval()  # "fine-tuned" visual: other weights
    head = trained_like(TransformerHead(64))
    ckpt = tmp_path / "text4vis.pt"
    torch.save({"epoch": 29, "model_state_dict": prefixed_state(visual, head)}, ckpt)

    video = shared_path("videos", "arm_wrestling.mp4")
    out = run_cli(
        str(video), "--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path),
        "--text4vis-checkpoint", str(ckpt), "--labels", ",".join(LABELS), "--views", "4x3", "--decoder", "pyav",
    )
    assert out["model"]["temporal"] == "transf" and out["model"]["preprocess"] == "text4vis"

    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    n, t, clips = len(frames), 8, 4
    tick = n / t
    starts = np.linspace(0, tick - 1, clips).astype(int)
    indices = [[int(s + tick * x) % n for x in range(t)] for s in starts]
    assert out["results"][0]["frame_indices"] == [i for clip in indices for i in clip]
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)])
    views = []
    sd = {k: v.detach() for k, v in head.state_dict().items()}
    with torch.no_grad():
        for clip_idx in indices:
            scaled = [T.Resize(256, interpolation=T.InterpolationMode.BICUBIC)(Image.fromarray(frames[i]))
                      for i in clip_idx]
            w, h = scaled[0].size
            w_step, h_step = (w - 224) // 4, (h - 224) // 4
            for left in (0, 2 * w_step, 4 * w_step):
                top = 2 * h_step
                pixels = torch.stack([to_tensor(im.crop((left, top, left + 224, top + 224))) for im in scaled])
                views.append(reference_transf(sd, visual(pixels)[None], layers=6, heads=128 // 64)[0])  # text width
        video_emb = F.normalize(torch.stack(views).mean(0), dim=-1)
        names = [clean_label(x) for x in LABELS]
        text = F.normalize(clip.encode_text(open_clip.get_tokenizer(TINY_ARCH)(
            [f"a video of a person {x}." for x in names])), dim=-1)
        ref = (100.0 * video_emb @ text.T).softmax(-1)
    ours = probs_by_label(out)
    diff = max(abs(ours[label] - float(ref[i])) for i, label in enumerate(LABELS))
    print(f"max |p_ours - p_reference| = {diff:.2e}")
    assert diff <= 1e-4
