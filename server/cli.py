"""``t4v``: the operator CLI. It is the composition root: it may import every layer.

One module per command group: ``cli_classify.py`` (classify), ``cli_vocab.py`` (vocab lint),
``cli_training.py`` (train, eval, export), ``cli_serve.py`` (serve, keys), ``cli_archive.py``
(index, relabel, search, archive), ``cli_sample.py`` (a sample clip for a first try). Heavy
modules (torch, open_clip, the engine's runtime, the server) are imported inside the commands
that use them: ``t4v --help`` and argument errors answer at once, and decode worker processes,
which import this module as their main one, stay small.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from text4vis.server import cli_archive, cli_classify, cli_sample, cli_serve, cli_training, cli_vocab

app = typer.Typer(add_completion=False, no_args_is_help=True, help="text4vis-serve operator CLI.")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what loads and runs.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


for _group in (cli_classify, cli_vocab, cli_training, cli_serve, cli_archive, cli_sample):
    _group.register(app)


if __name__ == "__main__":  # pragma: no cover - python -m text4vis.server.cli
    app()
