"""The README's commands exist and say what they do."""

import re
from pathlib import Path

from typer.testing import CliRunner

from text4vis.server.cli import app

ROOT = Path(__file__).resolve().parents[1]
OPTION = {"presets": "--preset", "providers": "--provider", "engine_dir": "--engine", "api_keys": "--api-key"}


def test_readme_opens_with_the_two_commands() -> None:
    first_block = ROOT.joinpath("README.md").read_text().split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.split("#")[0].strip()]
    assert commands == ["make serve", "make test"]
    makefile = ROOT.joinpath("Makefile").read_text()
    for target in ("serve", "test"):
        assert re.search(rf"^{target}:", makefile, re.M)


def test_ci_runs_the_readme_test_command() -> None:
    lines = [x for x in ROOT.joinpath(".ci/run").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[-1] == "make test"


def test_documented_classify_options_exist() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    documented = set(re.findall(r"(--[a-z][a-z0-9-]+)", readme.split("### Offline: `t4v classify`")[1].split("## ")[0]))
    result = CliRunner().invoke(app, ["classify", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    missing = {opt for opt in documented if opt not in result.stdout}
    assert not missing


def test_sections_in_the_promised_order() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    titles = re.findall(r"^## (.+)$", readme, re.M)
    wanted = ["What it is", "A first request", "What it does", "Documentation", "Development"]
    positions = [next(i for i, t in enumerate(titles) if t.startswith(w)) for w in wanted]
    assert positions == sorted(positions), titles


def test_readme_is_a_newcomers_page() -> None:
    """What a new user needs, at most ~15 KB; reference material lives in docs/. It points only
    inside the repository (a clone has no ../shared)."""
    readme = ROOT.joinpath("README.md").read_text()
    assert len(readme.encode()) <= 15_500, len(readme.encode())
    assert "../" not in readme and "DESIGN.md" not in readme
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        if not link.startswith("http"):
            assert ROOT.joinpath(link).is_file(), link
    for doc in ROOT.glob("docs/*.md"):
        text = doc.read_text()
        assert "DESIGN.md" not in text, doc
        for link in re.findall(r"\]\(([^)#]+)\)", text):
            if not link.startswith("http"):
                assert doc.parent.joinpath(link).is_file(), (doc, link)


def test_configuration_reference_is_generated_from_the_settings() -> None:
    """docs/configuration.md is what the Settings say today (regenerate it with
    ``python -m text4vis.server.config_reference``), and every option is one of t4v serve's."""
    from text4vis.server.config_reference import DOC, render
    from text4vis.server.settings import Settings

    assert DOC.read_text() == render(), "docs/configuration.md is stale: python -m text4vis.server.config_reference"
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in Settings.model_fields:
        assert f"`T4V_{name.upper()}`" in render(), name
        option = OPTION.get(name, f"--{name.replace('_', '-')}")
        assert option in result.stdout, option


def test_each_option_is_declared_once() -> None:
    """Every option class's field is declared in one file of the whole tree (training included):
    the weights' options in models/options.py, the runtime's in engine/options.py, serving's in
    server/settings.py, the recipe's in models/training/config.py; the CLIs derive their flags from
    them (models/cli_options.py) and redeclare none, and training reuses the model options."""
    from text4vis.engine.options import ModelOptions
    from text4vis.models.options import WeightOptions
    from text4vis.models.training.config import TrainConfig
    from text4vis.server.settings import ServingOptions

    files = [*ROOT.glob("server/**/*.py"), *ROOT.glob("engine/**/*.py"), *ROOT.glob("models/**/*.py")]
    wire = {ROOT / "server" / "wire.py", *ROOT.glob("server/routes/*.py")}  # the API's bodies are not options
    sources = {p: p.read_text() for p in files if p not in wire}
    fields = {
        *ModelOptions.model_fields,
        *ServingOptions.model_fields,
        *WeightOptions.model_fields,
        *TrainConfig.model_fields,
    }
    cli_options = {*ModelOptions.model_fields, *ServingOptions.model_fields}  # what t4v's commands derive
    for name in sorted(fields):
        field = rf"^\s+{name}: [^=\n]+= Field\("
        option = rf"\b{name}: Annotated\[" if name in cli_options else r"(?!)"
        declared = [
            str(p.relative_to(ROOT))
            for p, text in sources.items()
            if re.search(field, text, re.M) or re.search(option, text)
        ]
        assert len(declared) == 1, (name, declared)
    assert "arch" not in TrainConfig.model_fields and "model" in TrainConfig.model_fields


def test_serve_help_shows_defaults() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "[default: 8000]" in result.stdout.replace("(", "").replace(")", "")
    assert "[default: 127.0.0.1]" in result.stdout.replace("(", "").replace(")", "")


def test_system_deps_wait_for_the_dpkg_lock() -> None:
    """`make test` installs redis-server/chromium when missing: another apt holding the dpkg lock
    is waited for (apt's lock timeout), not a failure."""
    recipe = ROOT.joinpath("Makefile").read_text().split("system-deps:")[1].split("\n\n")[0]
    calls = recipe.count("apt-get ")
    assert calls == 2 and recipe.count("-o DPkg::Lock::Timeout=600") == calls


def test_every_command_block_is_tested_or_marked() -> None:
    """Each ```bash block of the README and of docs/ names the tests that run its commands
    (``# tested by:``, every named test existing) or says what it needs that CI lacks (``# needs:``)."""
    pages = [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]
    blocks = [b.split("```")[0] for page in pages for b in page.read_text().split("```bash\n")[1:]]
    assert len(blocks) >= 8
    for block in blocks:
        marks = [line for line in block.splitlines() if line.startswith(("# tested by:", "# needs:"))]
        assert marks, block
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", " ".join(marks)):
            source = ROOT.joinpath(path).read_text()
            assert f"def {name}(" in source, (path, name)


def test_make_serve_says_where_to_go_next() -> None:
    """A fresh shell has no t4v on its PATH: make serve prints the URL, the next command (through
    the venv) and the offline way to try it."""
    recipe = ROOT.joinpath("Makefile").read_text().split("\nserve:")[1].split("\n\n")[0]
    assert "http://127.0.0.1:8000/" in recipe and "source $(VENV)/bin/activate" in recipe
    assert "--model ViT-B-32 --random-init" in recipe


def test_documented_exit_codes_and_model_ids_are_true(tmp_path: Path) -> None:
    """The README's exit codes are what ``t4v classify`` does (a bad option 2, a file that cannot be
    classified 1: it said 2 for both), every model id the docs show is one the loader makes
    (``ViT-B-16/openai`` is ``ViT-B-16-quickgelu/openai``: OpenAI's weights run QuickGELU), and
    ``t4v serve --help`` names a file that exists."""
    import open_clip

    from text4vis.models.clip_loader import _spelled

    readme = ROOT.joinpath("README.md").read_text()
    said = " ".join(readme.split("### Offline: `t4v classify`")[1].split("## ")[0].split())
    assert "exit 2 with one line on stderr" in said and "the run exits 1" in said
    bad_option = CliRunner().invoke(app, ["classify", "x.mp4", "--labels", "a", "--views", "0x0"])
    assert bad_option.exit_code == 2
    missing = CliRunner().invoke(app, ["classify", str(tmp_path / "nope.mp4"), "--labels", "a", "--random-init"])
    assert missing.exit_code == 1, missing.output
    shown = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        shown |= set(re.findall(r'"(?:text_)?model"\s*:\s*"([^"]+/[^"]+)"', doc.read_text()))
    assert shown, "the docs show no model id to check"
    for model_id in shown:
        arch, tag = model_id.rsplit("/", 1)
        if tag.startswith(("sha256:", "random-seed")):
            continue
        base = arch.removesuffix("-quickgelu")
        quick = bool(open_clip.get_pretrained_cfg(base, tag).get("quick_gelu", False))
        assert model_id == f"{_spelled(base, quick)}/{tag}", model_id
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "300"}).output
    named = re.search(r"(docs/[a-z-]+\.md)", help_text)
    assert named and (ROOT / named.group(1)).is_file() and "README's table" not in help_text
