"""The wheel a user installs: one top-level package, ``text4vis``, holding every package of the
three folders (the build configuration lists them: a new subpackage missing there fails here)
and their data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_top_level_package_with_every_module(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("text4vis_serve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"text4vis"}, top
    for folder in ("server", "engine", "models"):
        for module in (ROOT / folder).rglob("*.py"):
            assert f"text4vis/{module.relative_to(ROOT).as_posix()}" in names, module
    for data in (
        "text4vis/server/static/index.html",
        "text4vis/models/configs/t4v-tiny-vit.json",
        "text4vis/models/training/configs/ucf101_few_shot.yaml",
    ):
        assert data in names, data
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "t4v = text4vis.server.cli:app" in zipfile.ZipFile(wheel).read(entry).decode()
