from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from tests.media import moving_square_frames, write_video
from text4vis.engine.runtime.build import Runtime
from text4vis.models.clip_loader import CONFIG_DIR, TINY_ARCH, ClipSource, LoadedClip, load_clip

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VIDEOS = SHARED_DATA / "videos"
REAL_CLIPS = ["arm_wrestling.mp4", "k400_sample_340x256.mp4", "ucf101_sample_320x240.avi"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Without the shared test data the run stops at once with one line, instead of forty
    failures that each say it: a clone without it must not pass quietly, nor drown the reason."""
    if not VIDEOS.is_dir():
        pytest.exit(
            f"test data missing: {SHARED_DATA} (the tests read real clips and class lists from "
            "../shared/data beside the checkout)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def shared_path(*parts: str) -> Path:
    """A file of ../shared/data (real clips, class lists, templates). The few tests that need real
    content use it; missing, it is a failure, never a skip: a clone without it must not pass
    quietly. Tests that only need "a video" use ``tests.media.generated_videos`` instead."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the tests read ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised CLIP (open_clip format) saved to a local file."""
    torch.manual_seed(1234)
    model = open_clip.create_model(TINY_ARCH)
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_path: Path) -> LoadedClip:
    return load_clip(ClipSource(arch=TINY_ARCH, checkpoint=tiny_clip_path))


@pytest.fixture(scope="session")
def synthetic_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "square.mp4"
    return write_video(path, moving_square_frames(40))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from tests.redis_server import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


GELU_ARCH = "t4v-tiny-vit-gelu"  # the tiny shapes, GELU as open_clip's plain configs (ViT-B-16) say
QUICK_TAG = "openai_like"  # a hub tag whose config says quick_gelu, as open_clip's "openai" tags do


@pytest.fixture(scope="session")
def quick_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights trained (here: drawn) with QuickGELU, in open_clip's layout (OpenAI's key names), and
    a GELU architecture of the same shapes, with a hub tag for those weights that says QuickGELU."""
    folder = tmp_path_factory.mktemp("quick")
    config = json.loads((CONFIG_DIR / f"{TINY_ARCH}.json").read_text())
    assert config.pop("quick_gelu") is True
    (folder / f"{GELU_ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{GELU_ARCH}.json")
    torch.manual_seed(21)
    path = folder / "weights.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), path)
    open_clip.pretrained._PRETRAINED[GELU_ARCH] = {  # a local file stands for the hub download
        QUICK_TAG: {
            "file": str(path),
            "quick_gelu": True,
            "mean": open_clip.OPENAI_DATASET_MEAN,
            "std": open_clip.OPENAI_DATASET_STD,
        },
    }
    return path


@pytest.fixture(scope="session")
def runtime(tiny_clip_path: Path) -> Runtime:
    """The tiny model with the mean head, built once for every test that only runs it."""
    from tests.server_helpers import tiny_runtime

    return tiny_runtime(tiny_clip_path)
