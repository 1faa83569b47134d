"""Injected dependencies (``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from text4vis.engine.facade import Engine
from text4vis.engine.runtime.build import Runtime
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.server.errors import NotReady
from text4vis.server.state import ServerState


def get_state(request: Request) -> ServerState:
    service: ServerState = request.app.state.server
    return service


StateDep = Annotated[ServerState, Depends(get_state)]


def _ready(service: StateDep) -> ServerState:
    if not service.ready:
        raise NotReady(service.error or "the model is loading")
    return service


def get_registry(service: Annotated[ServerState, Depends(_ready)]) -> VocabRegistry:
    assert service.registry is not None
    return service.registry


def get_runtime(service: Annotated[ServerState, Depends(_ready)]) -> Runtime:
    assert service.runtime is not None
    return service.runtime


def get_engine(service: Annotated[ServerState, Depends(_ready)]) -> Engine:
    assert service.engine is not None
    return service.engine


def require_key(request: Request, service: StateDep) -> None:
    """Changes to vocabularies need an API key when keys are configured (server/auth.py)."""
    service.api_keys.check(request)


def require_key_to_classify(request: Request, service: StateDep) -> None:
    if service.settings.auth_classify:
        service.api_keys.check(request)


def require_key_for_metrics(request: Request, service: StateDep) -> None:
    if service.settings.auth_metrics:
        service.api_keys.check(request)


KEY_GUARDS = (require_key, require_key_to_classify, require_key_for_metrics)  # run before a body is read (KeyFirst)

RegistryDep = Annotated[VocabRegistry, Depends(get_registry)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
EngineDep = Annotated[Engine, Depends(get_engine)]
