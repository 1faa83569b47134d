"""The SDK and t4v-client keep up with the server: every form field of /classify and
/classify/timeline (read from the server's own OpenAPI schema) is a keyword of the SDK's methods
and an option of t4v-client, so the next field cannot be forgotten."""

from __future__ import annotations

import inspect
import re

import pytest
from typer.testing import CliRunner

from t4v_client import AsyncClient, Client
from t4v_client.cli import app as client_app
from text4vis.server.app import create_app
from text4vis.server.settings import Settings

# the SDK's spelling of a field where it differs; fields the method itself implies
SDK_NAME = {"file": "media"}
CLI_NAME = {"window_s": "--window", "stride_s": "--stride", "file": None, "stream": None}
IMPLIED = {"stream"}  # timeline() vs stream_timeline()


def _form_fields(path: str) -> list[str]:
    schema = create_app(Settings(data_dir="/tmp/t4v-parity")).openapi()
    body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    return list(body["properties"])


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/classify", [Client.classify, AsyncClient.classify]),
        (
            "/classify/timeline",
            [Client.timeline, Client.stream_timeline, AsyncClient.timeline, AsyncClient.stream_timeline],
        ),
    ],
)
def test_every_form_field_is_an_sdk_keyword(path: str, methods: list) -> None:  # noqa: ANN001
    fields = _form_fields(path)
    assert "top_k" in fields and "vocab" in fields
    for method in methods:
        params = inspect.signature(method).parameters
        missing = [f for f in fields if f not in IMPLIED and SDK_NAME.get(f, f) not in params]
        assert not missing, (method.__qualname__, missing)


@pytest.mark.parametrize(("path", "command"), [("/classify", "classify"), ("/classify/timeline", "timeline")])
def test_every_form_field_is_a_t4v_client_option(path: str, command: str) -> None:
    out = CliRunner().invoke(client_app, [command, "--help"], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    options = set(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))
    for field in _form_fields(path):
        flag = CLI_NAME.get(field, "--" + field.replace("_", "-"))
        if flag is not None and field not in IMPLIED:
            assert flag in options, (command, field, flag)


def test_global_options_go_before_or_after_the_command() -> None:
    """``t4v-client --url U health`` and ``t4v-client health --url U`` both ask U."""
    from tests.http_stub import stub_server

    with stub_server(lambda n, path: (200, {}, {"status": "ok", "detail": None})) as (url, seen):
        for args in (["--url", url, "health"], ["health", "--url", url]):
            before = len(seen)
            out = CliRunner().invoke(client_app, args, env={"T4V_URL": "http://127.0.0.1:9"})
            assert out.exit_code == 0, out.output
            assert "ready: True" in out.stdout and len(seen) > before


def test_every_error_status_of_the_server_has_a_client_type() -> None:
    """A status the server answers (server/errors.py) is a type of its own in the SDK, not the
    catch-all T4VError (408 was, when slow uploads got their answer)."""
    import t4v_client
    from t4v_client.errors import error_for
    from text4vis.server.errors import STATUS

    for exc_type, status in STATUS:
        kind = type(error_for(status, "x"))
        assert kind is not t4v_client.T4VError, f"{exc_type.__name__} ({status}) has no type in the SDK"
        assert kind.__name__ in t4v_client.__all__
