"""The Python client and `t4v-client` against a real running server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from t4v_client import AsyncClient, Client, NotFound, PayloadTooLarge, PreconditionFailed, UnsupportedMedia
from tests.media import generated_videos


def test_client_round_trip(live_server: str, tmp_path: Path) -> None:
    clip = generated_videos()["clip_a.mp4"]
    with Client(live_server) as c:
        assert c.health().ready
        v = c.put_vocab("client-sports", ["arm wrestling", "surfing", "yoga"])
        assert v.version == 1 and c.get_vocab("client-sports").etag == v.etag
        assert "client-sports" in [x.name for x in c.list_vocabs()]
        result = c.classify(clip, vocab="client-sports", top_k=0, thumbnails=True)
        assert result.vocab is not None and result.vocab.version == 1 and len(result.predictions) == 3
        assert abs(sum(p.probability for p in result.predictions) - 1) < 1e-6
        assert result.thumbnails and result.thumbnails[0].startswith("data:image/jpeg;base64,")
        adhoc = c.classify(clip.read_bytes(), labels=["a", "b"], filename="clip.mp4")
        assert adhoc.vocab is None and {p.label for p in adhoc.predictions} == {"a", "b"}
        with pytest.raises(PreconditionFailed):
            c.put_vocab("client-sports", ["x", "y"], if_match="stale")
        v2 = c.put_vocab("client-sports", ["x", "y"], if_match=v.etag)
        assert v2.version == 2
        with pytest.raises(UnsupportedMedia, match="notes.txt"):
            c.classify(b"plain text, not a video" * 10, vocab="client-sports", filename="notes.txt")
        with pytest.raises(PayloadTooLarge):
            c.classify(b"\0" * (5 * 2**20), vocab="client-sports", filename="big.mp4")
        c.delete_vocab("client-sports")
        with pytest.raises(NotFound):
            c.get_vocab("client-sports")


def test_async_client_concurrent(live_server: str) -> None:
    clip = generated_videos()["clip_c.avi"]

    async def go() -> list[str]:
        async with AsyncClient(live_server) as c:
            await c.put_vocab("async-v", ["a", "b", "c"])
            results = await asyncio.gather(*(c.classify(clip, vocab="async-v") for _ in range(4)))
            await c.delete_vocab("async-v")
            return [r.predictions[0].label for r in results]

    tops = asyncio.run(go())
    assert len(set(tops)) == 1  # the same clip, the same answer, batched or not


def test_cli(live_server: str, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("arm wrestling\nsurfing\n")
    cli = [sys.executable, "-m", "t4v_client.cli"]
    put = subprocess.run(
        [*cli, "vocab", "put", "cli-v", "--labels-file", str(labels), "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert put.returncode == 0 and "cli-v v1: 2 labels" in put.stdout, put.stderr
    clip = generated_videos()["clip_a.mp4"]
    out = subprocess.run(
        [*cli, "classify", str(clip), "--vocab", "cli-v", "--json", "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert {p["label"] for p in json.loads(out.stdout)["predictions"]} == {"arm wrestling", "surfing"}
    table = subprocess.run([*cli, "vocab", "list", "--url", live_server], capture_output=True, text=True, timeout=60)
    assert "cli-v" in table.stdout
    missing = subprocess.run(
        [*cli, "vocab", "get", "nope", "--url", live_server], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no vocabulary named 'nope'"


def test_cli_shows_lint_warnings_and_the_similarity_heatmap(live_server: str, tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text('["surfing", "Surfing!", "yoga"]')
    cli = [sys.executable, "-m", "t4v_client.cli"]
    put = subprocess.run(
        [*cli, "vocab", "put", "cli-lint", "--labels-file", str(labels), "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert put.returncode == 0 and "warning: near duplicate: 'surfing' and 'Surfing!'" in put.stderr, put.stderr
    png = tmp_path / "map.png"
    heat = subprocess.run(
        [*cli, "vocab", "similarity", "cli-lint", "--png", str(png), "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert heat.returncode == 0 and png.read_bytes().startswith(b"\x89PNG"), heat.stderr
    top = subprocess.run(
        [*cli, "vocab", "similarity", "cli-lint", "--url", live_server], capture_output=True, text=True, timeout=60
    )
    assert top.returncode == 0 and len(top.stdout.splitlines()) == 3 and "~" in top.stdout


def test_client_abstention(live_server: str) -> None:
    from t4v_client import Client

    clip = generated_videos()["clip_a.mp4"]
    with Client(live_server) as c:
        c.put_vocab("client-open", ["basketball", "surfing"])
        result = c.classify(clip, vocab="client-open", abstain=True, min_score=1.0)
    assert result.abstained is True and result.abstain_reason  # min_score 1: nothing reaches it
    assert result.background is not None and len(result.background) == 3 and result.predictions
    cli = [sys.executable, "-m", "t4v_client.cli"]
    out = subprocess.run(
        [*cli, "classify", str(clip), "--vocab", "client-open", "--min-score", "1", "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "none of these:" in out.stdout, out.stderr


def test_client_abstention_defaults_and_named_background(live_server: str) -> None:
    from t4v_client import AbstainDefault

    clip = generated_videos()["clip_a.mp4"]
    with Client(live_server) as c:
        c.put_vocab("client-kitchen", ["cooking", "washing dishes", "chopping onion"])
        v = c.put_vocab(
            "client-default",
            ["basketball", "surfing"],
            abstain=AbstainDefault(margin=1.0, min_score=1.0, background="client-kitchen"),
        )
        assert v.abstain == AbstainDefault(margin=1.0, min_score=1.0, background="client-kitchen")
        by_default = c.classify(clip, vocab="client-default")
        assert by_default.abstained is True and by_default.background is not None
        assert {b.label for b in by_default.background} <= {"cooking", "washing dishes", "chopping onion"}
        assert c.classify(clip, vocab="client-default", abstain=False).abstained is None
        named = c.classify(clip, labels=["basketball", "surfing"], background="client-kitchen")
        assert named.abstained is not None and named.background is not None
    cli = [sys.executable, "-m", "t4v_client.cli"]
    put = subprocess.run(
        [
            *cli,
            "vocab",
            "put",
            "cli-default",
            "--labels",
            "basketball,surfing",
            "--abstain",
            "--abstain-margin",
            "1",
            "--min-score",
            "1",
            "--url",
            live_server,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert put.returncode == 0 and json.loads(put.stdout)["abstain"]["min_score"] == 1.0, put.stderr
    on = subprocess.run(
        [*cli, "classify", str(clip), "--vocab", "cli-default", "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert on.returncode == 0 and "none of these:" in on.stdout, on.stderr
    off = subprocess.run(
        [*cli, "classify", str(clip), "--vocab", "cli-default", "--no-abstain", "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert off.returncode == 0 and "none of these:" not in off.stdout, off.stderr


def test_client_archive_calls(live_server: str, tmp_path: Path) -> None:
    """index_video, classify(index=True), search, relabel_archive, the page and delete calls; and
    ``t4v-client search`` / ``relabel`` print what the SDK returns."""
    videos = generated_videos()
    with Client(live_server) as c:
        stored = c.index_video(videos["clip_b.mp4"], window_s=4.0, metadata={"camera": 3})
        assert stored.windows == 3 and stored.video.metadata == {"camera": 3}
        result = c.classify(videos["clip_c.avi"], labels=["surfing", "yoga"], index=True)
        assert result.archive_id is not None and len(result.archive_id) == 64
        ids = {stored.video.id, result.archive_id}
        assert {h.id for h in c.search("surfing", k=50)} >= ids
        assert all(h.kind == "window" for h in c.search("surfing", kind="window"))
        rows = list(c.relabel_archive(labels=["surfing", "yoga"], top_k=1))
        assert ids <= {r.id for r in rows} and all(len(r.predictions) == 1 for r in rows)  # typed rows
        assert c.archive_video(stored.video.id).name == "clip_b.mp4"
        assert c.archive_videos(limit=1).total >= 2
        assert c.delete_archive_video(stored.video.id) == 4
        with pytest.raises(NotFound):
            c.archive_video(stored.video.id)
    client = [sys.executable, "-m", "t4v_client.cli"]
    out = subprocess.run([*client, "search", "surfing", "--url", live_server, "--json"], capture_output=True, text=True)
    assert out.returncode == 0 and result.archive_id in out.stdout, out.stderr
    out = subprocess.run(
        [*client, "relabel", "--labels", "surfing,yoga", "--url", live_server], capture_output=True, text=True
    )
    assert out.returncode == 0 and result.archive_id in out.stdout, out.stderr
    for suffix in (".csv", ".parquet", ".jsonl"):
        target = tmp_path / f"labels{suffix}"
        out = subprocess.run(
            [*client, "relabel", "--labels", "surfing,yoga", "--out", str(target), "--url", live_server],
            capture_output=True,
            text=True,
        )
        assert (
            out.returncode == 0
            and "rows to" in out.stderr
            and result.archive_id in target.read_bytes().decode("latin-1")
        ), out.stderr

    async def from_async() -> list[str]:
        async with AsyncClient(live_server) as a:
            hits = await a.search("surfing", k=50)
            assert (await a.archive_stats())["tables"] and (await a.archive_videos(limit=1)).total >= 1
            assert (await a.archive_video(result.archive_id or "")).id == result.archive_id
            return [r.id async for r in a.relabel_archive(labels=["surfing", "yoga"])] + [h.id for h in hits]

    assert result.archive_id in asyncio.run(from_async())


def test_few_shot_vocabularies_from_the_sdk_and_t4v_client(live_server: str, tmp_path: Path) -> None:
    """Examples by archive id (put_vocab) and by upload (add_example, `t4v-client vocab example`),
    the fitted method reported, the stored embedding read back."""
    from t4v_client import FewShotSettings, InvalidInput

    clips = generated_videos()
    with Client(live_server) as c:
        stored = {name: c.index_video(path).video.id for name, path in clips.items()}
        row = c.archive_video(stored["clip_a.mp4"], embedding=True)
        assert row.embedding is not None and len(row.embedding) == 64
        v = c.put_vocab(
            "shots",
            ["quartz", "velvet"],
            examples={"quartz": [stored["clip_a.mp4"]]},
            few_shot=FewShotSettings(method="prototype", blend=1.0),
        )
        assert v.few_shot is not None and v.few_shot.examples == {"quartz": 1} and v.few_shot.blend == 1.0
        v2 = c.add_example("shots", clips["clip_b.mp4"], label="velvet")
        assert v2.version == 2 and v2.few_shot is not None and v2.few_shot.ids["velvet"] == [stored["clip_b.mp4"]]
        assert c.classify(clips["clip_b.mp4"], vocab="shots").predictions[0].label == "velvet"
        with pytest.raises(InvalidInput, match="'granite' is not one of the labels"):
            c.add_example("shots", clips["clip_c.avi"], label="granite")
    cli = [sys.executable, "-m", "t4v_client.cli", "--url", live_server]
    done = subprocess.run(
        [*cli, "vocab", "example", "shots", str(clips["clip_c.avi"]), "--label", "quartz"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "shots v3" in done.stdout and "3 examples (prototype" in done.stdout, done.stderr


def test_t4v_client_says_what_a_newcomer_needs(live_server: str, tmp_path: Path) -> None:
    """The first hour with t4v-client: a missing file is named as such (it read ``[Errno 2] No
    such file or directory``), an unreachable server is named by its URL, ``--json | head``
    ends quietly (it ended with ``error: [Errno 32] Broken pipe``), and the table says which model
    answered."""
    cli = [sys.executable, "-m", "t4v_client.cli"]
    clip = str(generated_videos()["clip_a.mp4"])
    missing = subprocess.run(
        [*cli, "classify", str(tmp_path / "nope.mp4"), "--labels", "a,b", "--url", live_server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no such file: {tmp_path / 'nope.mp4'}"
    down = subprocess.run(
        [*cli, "classify", clip, "--labels", "a,b", "--url", "http://127.0.0.1:9"], capture_output=True, text=True
    )
    assert down.returncode == 1 and "cannot reach the server at http://127.0.0.1:9" in down.stderr, down.stderr
    piped = subprocess.run(
        [
            "bash",
            "-c",
            " ".join([*cli, "classify", *[clip] * 6, "--labels", "a,b", "--json", "--url", live_server])
            + " | head -c 10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stderr == "" and len(piped.stdout) == 10, piped.stderr
    table = subprocess.run(
        [*cli, "classify", clip, "--labels", "a,b", "--url", live_server], capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0 and "model t4v-tiny-vit" in table.stdout, table.stdout
    assert "RANDOM" not in table.stderr


def test_t4v_client_warns_of_random_weights(capsys: pytest.CaptureFixture[str]) -> None:
    """A server run with --random-init answers with a model id that says so; the table warns."""
    from t4v_client.cli import _print_result
    from t4v_client.models import ClassifyResult

    result = ClassifyResult.model_validate(
        {
            "vocab": None,
            "predictions": [{"label": "a", "probability": 0.6, "score": 0.2}],
            "model": "ViT-B-32/random-seed0",
            "frame_indices": [0],
            "timing_ms": {},
        }
    )
    _print_result(Path("clip.mp4"), result, as_json=False)
    captured = capsys.readouterr()
    assert "model ViT-B-32/random-seed0" in captured.out and "RANDOM weights" in captured.err
