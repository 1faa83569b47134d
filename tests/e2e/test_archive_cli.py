"""`t4v index`, `t4v relabel` and `t4v search` as a user runs them: real processes, real files,
a run killed mid-way, two writers at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import shared_path
from tests.media import moving_square_frames, write_video
from text4vis.engine.archive.lance import TABLE_PREFIX
from text4vis.models.clip_loader import TINY_ARCH

T4V = [sys.executable, "-m", "text4vis.server.cli"]


def t4v(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*T4V, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model(tiny_clip_path: Path) -> list[str]:
    return ["--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path)]


@pytest.fixture(scope="module")
def many_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small distinct videos."""
    folder = tmp_path_factory.mktemp("clips")
    for i in range(12):
        write_video(folder / f"clip{i:02d}.mp4", moving_square_frames(24, 96, 64, seed=i))
    return folder


def stored_ids(archive: Path) -> list[str]:
    import lancedb

    db = lancedb.connect(str(archive))
    (name,) = [n for n in db.list_tables().tables if n.startswith(TABLE_PREFIX)]
    return db.open_table(name).to_arrow()["id"].to_pylist()


def test_index_relabel_search(model: list[str], tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    videos = shared_path("videos")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 2000)
    proc = t4v("index", str(videos), str(bad), "--archive", archive, "--windows", "4", *model)
    assert proc.returncode == 1, proc.stderr  # the broken file is reported, the others stored
    assert "error: " in proc.stderr and "broken.mp4" in proc.stderr and "Traceback" not in proc.stderr
    assert "3 files indexed, 0 already stored, 1 failed" in proc.stderr
    again = t4v("index", str(videos), "--archive", archive, *model)
    assert again.returncode == 0 and "0 files indexed, 3 already stored" in again.stderr, again.stderr

    out = tmp_path / "labels.parquet"
    proc = t4v(
        "relabel",
        "--archive",
        archive,
        "--labels",
        "arm wrestling,yoga,surfing",
        "--top-k",
        "2",
        "--out",
        str(out),
        *model,
    )
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.num_rows == 3 and set(table["kind"].to_pylist()) == {"video"}
    assert all(len(p) == 2 for p in table["predictions"].to_pylist())
    csv_out = tmp_path / "labels.csv"
    proc = t4v(
        "relabel", "--archive", archive, "--preset", "kinetics400", "--kind", "all", "--out", str(csv_out), *model
    )
    assert proc.returncode == 0, proc.stderr
    header, *lines = csv_out.read_text().splitlines()
    assert header.startswith("id,content_id,name,kind,start_s,end_s,names,label_1,probability_1,score_1")
    assert len(lines) == len(stored_ids(tmp_path / "archive")) > 3  # videos and windows
    proc = t4v("relabel", "--archive", archive, "--labels", "a,b", "--top-k", "0", *model)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 3 and all(abs(sum(p["probability"] for p in r["predictions"]) - 1) < 1e-9 for r in rows)

    proc = t4v("search", "arm wrestling", "--archive", archive, "--k", "2", "--json", *model)
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]
    proc = t4v("search", "arm wrestling", "--archive", archive, "--windows", "--json", *model)
    windows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert windows and all(w["kind"] == "window" and w["end_s"] > w["start_s"] for w in windows)


def test_another_model_and_a_bad_archive_are_one_line(model: list[str], tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    assert t4v("index", str(shared_path("videos", "arm_wrestling.mp4")), "--archive", archive, *model).returncode == 0
    proc = t4v("relabel", "--archive", archive, "--labels", "a,b", "--frames", "4", *model)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "holds no embeddings of this model and sampling" in proc.stderr and "4 frames" in proc.stderr
    assert "8 frames" in proc.stderr  # what the archive holds
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    proc = t4v("search", "x", "--archive", str(not_a_dir), *model)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the archive") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_killed_and_concurrent_runs_store_every_row_once(model: list[str], many_clips: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    proc = subprocess.Popen(
        [*T4V, "index", str(many_clips), "--archive", str(archive), *model],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # killed once its first files are in ("indexed 1/12 files")
        line = proc.stderr.readline()
        if line.startswith("indexed 3/"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = stored_ids(archive)
    assert 0 < len(before) < 12 and len(set(before)) == len(before)

    # two writers at once over the rest (and what is stored already)
    runs = [
        subprocess.Popen([*T4V, "index", str(many_clips), "--archive", str(archive), *model], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read() if run.stderr else ""
    after = stored_ids(archive)
    assert len(after) == 12 and len(set(after)) == 12
    assert set(before) <= set(after)
    assert np.unique(after).size == 12


@pytest.mark.slow
def test_ray_data_indexes_the_same_rows(model: list[str], tmp_path: Path) -> None:
    """`t4v index --ray local` (Ray Data on this machine: decode tasks, an encoder actor) stores the
    rows `t4v index` stores: the same ids, embeddings within 1e-6; a broken file is reported."""
    import lancedb

    videos = str(shared_path("videos"))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 2000)
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert t4v("index", videos, "--archive", str(local), "--windows", "4", *model).returncode == 0
    proc = t4v("index", videos, str(bad), "--archive", str(on_ray), "--windows", "4", "--ray", "local", *model)
    assert proc.returncode == 1, proc.stderr
    assert f"error: {bad}: not a video or image" in proc.stderr and "Traceback" not in proc.stderr

    def rows(archive: Path) -> dict[str, np.ndarray]:
        db = lancedb.connect(str(archive))
        (name,) = [n for n in db.list_tables().tables if n.startswith(TABLE_PREFIX)]
        table = db.open_table(name).to_arrow()
        return {i: np.array(e) for i, e in zip(table["id"].to_pylist(), table["embedding"].to_pylist(), strict=True)}

    expected, got = rows(local), rows(on_ray)
    assert sorted(got) == sorted(expected) and len(got) > 3  # videos and their windows
    assert max(float(np.abs(got[k] - expected[k]).max()) for k in expected) < 1e-6
    again = t4v("index", videos, "--archive", str(on_ray), "--ray", "local", *model)
    assert again.returncode == 0 and "0 files indexed, 3 already stored" in again.stderr, again.stderr
    assert "Ray was not started" in again.stderr and "Token authentication" not in proc.stderr  # quiet
    touched = shared_path("videos", "arm_wrestling.mp4")
    copy = tmp_path / "more" / touched.name
    copy.parent.mkdir()
    copy.write_bytes(touched.read_bytes())  # a known content under a new path: Ray runs, decodes nothing
    third = t4v("index", videos, str(copy.parent), "--archive", str(on_ray), "--ray", "local", *model)
    assert (
        third.returncode == 0
        and "4 already stored" in third.stderr
        and "1 stored files seen under a new name" in third.stderr
    ), third.stderr


def test_archive_check_marks_tables_that_may_mix_rows_and_verifies(model: list[str], tmp_path: Path) -> None:
    """An archive written before the fingerprint named activation, precision and backend: `t4v
    archive check` lists it as such, and --verify finds the row made otherwise (here one stored
    embedding nudged, as a bf16 run's would be) while the current table's rows all verify."""
    from text4vis.engine.archive.lance import LanceArchive
    from text4vis.engine.archive.spec import ArchiveSpec
    from text4vis.engine.archive.store import ArchiveRow

    archive = tmp_path / "archive"
    videos = shared_path("videos")
    assert t4v("index", str(videos), "--archive", str(archive), *model).returncode == 0
    store = LanceArchive(str(archive))
    (current,) = store.specs()
    legacy = ArchiveSpec.from_json(
        json.dumps({k: v for k, v in json.loads(current.to_json()).items() if k not in ("activation", "precision")})
    )
    assert legacy.legacy
    rows = [store.table(current).get(r["id"]) for r in store.table(current).page("video")]
    vectors = {
        b_id: v
        for b in store.table(current).scan()
        for b_id, v in zip(b["id"].to_pylist(), b["embedding"].to_pylist(), strict=True)
    }
    old = []
    for i, r in enumerate(rows):
        vector = np.asarray(vectors[r["id"]], dtype=np.float32)
        if i == 0:
            vector = vector + np.float32(3e-3)  # made otherwise
        old.append(ArchiveRow(r["id"], r["content_id"], r["name"], "video", 0.0, r["end_s"], r["duration_s"], vector))
    store.table(legacy, create=True).add(old)

    proc = t4v("archive", "check", "--archive", str(archive), "--verify", "3", *model)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"t4v archive drop {legacy.fingerprint}" in proc.stdout and "not recorded" in proc.stdout
    assert "verify: 0 of 3 videos differ" in proc.stdout and "verify: 1 of 3 videos differ" in proc.stdout
    drop = t4v("archive", "drop", legacy.fingerprint, "--archive", str(archive))
    assert drop.returncode == 0 and "3 rows" in drop.stdout
    assert t4v("archive", "check", "--archive", str(archive)).returncode == 0
    upkeep = t4v("archive", "maintain", "--archive", str(archive))
    assert upkeep.returncode == 0 and "1 tables up to date" in upkeep.stdout  # t4v index maintained it already


def test_examples_make_ad_hoc_labels_few_shot_offline(model: list[str], tmp_path: Path) -> None:
    """`--examples` (archive window ids and a file) on `t4v classify` and `t4v relabel`: the same
    few-shot classifier both ways (relabel of a stored video == classify of its file), and
    `--with-embeddings` writes the stored vectors."""
    from text4vis.engine.archive.lance import LanceArchive

    archive = tmp_path / "archive"
    videos = shared_path("videos")
    assert t4v("index", str(videos), "--archive", str(archive), "--windows", "2", *model).returncode == 0
    (spec,) = LanceArchive(str(archive)).specs()
    table = LanceArchive(str(archive)).table(spec)
    names = {r["content_id"]: Path(r["name"]).stem for r in table.page("video")}
    words = dict(zip(sorted(names.values()), ("quartz", "velvet", "harbor"), strict=True))
    lines = []
    for content, stem in names.items():
        for window in table.windows_of(content)[:2]:
            lines.append(f"{words[stem]},{window['id']}")
    clip = sorted(videos.glob("*"))[0]
    lines.append(f"{words[clip.stem]},{clip}")  # a file, embedded here
    examples = tmp_path / "examples.csv"
    examples.write_text("# label,id-or-path\n" + "\n".join(lines) + "\n")
    labels = ",".join(words.values())

    out = tmp_path / "labels.parquet"
    proc = t4v(
        "relabel",
        "--archive",
        str(archive),
        "--labels",
        labels,
        "--examples",
        str(examples),
        "--top-k",
        "0",
        "--with-embeddings",
        "--out",
        str(out),
        *model,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in pq.read_table(out).to_pylist()}
    assert all(len(r["embedding"]) == 64 for r in rows.values())
    proc = t4v(
        "classify",
        str(clip),
        "--labels",
        labels,
        "--examples",
        str(examples),
        "--archive",
        str(archive),
        "--top-k",
        "0",
        "--json",
        *model,
    )
    assert proc.returncode == 0, proc.stderr
    (answer,) = json.loads(proc.stdout)["results"]
    stored = {p["label"]: p["probability"] for p in rows[str(clip)]["predictions"]}
    assert max(abs(stored[p["label"]] - p["probability"]) for p in answer["predictions"]) < 1e-6
    assert answer["predictions"][0]["label"] == words[clip.stem]

    bad = tmp_path / "bad.csv"
    bad.write_text("quartz\n")
    proc = t4v("classify", str(clip), "--labels", labels, "--examples", str(bad), *model)
    assert proc.returncode == 2 and "an example is a line 'label,id-or-path'" in proc.stderr
    bad.write_text(f"granite,{clip}\n")
    proc = t4v("classify", str(clip), "--labels", labels, "--examples", str(bad), *model)
    assert proc.returncode == 2 and "'granite', which is not one of the labels" in proc.stderr
    csv_out = t4v(
        "relabel", "--archive", str(archive), "--labels", labels, "--with-embeddings", "--out", "x.csv", *model
    )
    assert csv_out.returncode == 2 and "--with-embeddings writes .parquet or .jsonl" in csv_out.stderr


def test_a_search_run_before_loads_no_model_and_answers_the_same(
    model: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_server: str
) -> None:
    """The second `t4v search` with the same options reads the cached table and query embedding
    (no model: loading one would fail here) and answers what the first did; --url asks a server."""
    from typer.testing import CliRunner

    from text4vis.server import cli_archive
    from text4vis.server.cli import app

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = str(tmp_path / "archive")
    assert t4v("index", str(shared_path("videos")), "--archive", archive, *model).returncode == 0
    args = ["search", "arm wrestling", "--archive", archive, "--json", *model]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and len(first.stdout.splitlines()) == 3, first.output

    def no_model(*_: object) -> None:
        raise AssertionError("a model was loaded for a search run before")

    monkeypatch.setattr(cli_archive, "_engine", no_model)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert [json.loads(x) for x in second.stdout.splitlines()] == [json.loads(x) for x in first.stdout.splitlines()]
    windows = CliRunner().invoke(app, [*args, "--windows"])  # the same query over windows: still no model
    assert windows.exit_code == 0, windows.output
    other = CliRunner().invoke(app, ["search", "yoga", *args[2:]])  # a new query: its embedding needs the model
    assert other.exit_code != 0 and "a model was loaded" in str(other.exception)

    remote = CliRunner().invoke(app, ["search", "surfing", "--url", live_server, "--json"])
    assert remote.exit_code == 0, remote.output  # the server's archive (whatever it holds now)
    bad = CliRunner().invoke(app, ["search", "surfing", "--url", live_server, "--k", "0"])
    assert bad.exit_code == 2 and "answered 422" in bad.stderr


@pytest.mark.slow
def test_a_newcomer_with_a_folder_of_videos(model: list[str], tmp_path: Path) -> None:
    """The first hour of a user who keeps a collection: duplicates under other names, a sub-folder,
    a broken file, a text file; a rerun asking for windows; another model for some of them."""
    clips = shared_path("videos")
    folder = tmp_path / "collection"
    (folder / "sub").mkdir(parents=True)
    (folder / "game.mp4").write_bytes((clips / "arm_wrestling.mp4").read_bytes())
    (folder / "game copy.mp4").write_bytes((clips / "arm_wrestling.mp4").read_bytes())
    (folder / "sub" / "match.mp4").write_bytes((clips / "k400_sample_340x256.mp4").read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00" * 4000)
    (folder / "notes.txt").write_text("not a video\n")
    archive = str(tmp_path / "archive")

    first = t4v("index", str(folder), "--archive", archive, *model)
    assert first.returncode == 1 and "broken.mp4" in first.stderr and "Traceback" not in first.stderr
    assert "1 files indexed" not in first.stderr  # the copy is the same content: stored once
    assert "2 files indexed, 1 already stored, 1 failed" in first.stderr, first.stderr

    labelled = t4v("relabel", "--archive", archive, "--labels", "arm wrestling,dancing", *model)
    rows = {Path(r["name"]).name: r for r in map(json.loads, labelled.stdout.splitlines())}
    assert len(rows) == 2, labelled.stdout
    game = next(r for r in rows.values() if "game" in r["name"])
    assert sorted(Path(n).name for n in game["names"]) == ["game copy.mp4", "game.mp4"]
    assert all(Path(n).is_absolute() for n in game["names"])  # a row leads back to its files from anywhere

    windows = t4v("index", str(folder), "--archive", archive, "--windows", "4", *model)
    assert "windows added to 2 stored files" in windows.stderr, windows.stderr
    found = t4v("search", "arm wrestling", "--archive", archive, "--windows", "--json", *model)
    assert found.returncode == 0 and len(found.stdout.splitlines()) >= 3

    half = [*model, "--precision", "bf16"]  # another model (its precision) for one of them
    assert t4v("index", str(folder / "sub"), "--archive", archive, *half).returncode == 0
    other = t4v("search", "arm wrestling", "--archive", archive, *half)
    assert "1 more videos of this archive are stored under other models" in other.stderr, other.stderr
    moved = tmp_path / "moved"
    (folder / "game copy.mp4").rename(moved)  # one name gone; the other still leads to the bytes
    again = t4v("archive", "reindex", "--archive", archive, *half)
    assert again.returncode == 0 and "1 videos embedded again" in again.stderr, again.stderr
    after = t4v("search", "arm wrestling", "--archive", archive, "--json", *half)
    assert len(after.stdout.splitlines()) == 2 and "stored under other models" not in after.stderr


def test_maintain_keeps_at_it_until_interrupted(model: list[str], tmp_path: Path) -> None:
    """`t4v archive maintain --every S`: the server's upkeep on a machine of its own (the
    server's off): rounds logged as they run, a clean stop on SIGINT or SIGTERM (one that
    does not stop shows every thread's stack, which ``kill -USR1`` writes)."""
    import signal
    import threading
    import time

    archive = tmp_path / "archive"
    assert t4v("index", str(shared_path("videos")), "--archive", str(archive), *model).returncode == 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [*T4V, "archive", "maintain", "--archive", str(archive), "--every", "0.3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None and proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120  # imports on a loaded machine
        while not any(line.startswith(f"maintaining {archive}") for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        time.sleep(1.5)  # a round every 0.3 s
        assert proc.poll() is None  # still at it
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the stacks, to stderr
            time.sleep(2)
            proc.kill()
            proc.wait()
            reader.join(5)
            raise AssertionError(f"still running 60 s after {sig.name}:\n{''.join(lines)}") from None
        reader.join(5)
        err, out = "".join(lines), proc.stdout.read()
        assert proc.returncode == 0, err
        assert "stopping after the step in progress" in err
        rounds = int(out.split()[0])
        assert rounds >= 2 and out.strip().endswith("full rounds"), out
