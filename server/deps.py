"""Injected dependencies (``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from engine.registry import VocabRegistry
from engine.runtime import Runtime
from engine.service import ClassifyService
from server.errors import NotReady
from server.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def _ready(service: ServiceDep) -> Service:
    if not service.ready:
        raise NotReady(service.error or "the model is loading")
    return service


def get_registry(service: Annotated[Service, Depends(_ready)]) -> VocabRegistry:
    assert service.registry is not None
    return service.registry


def get_runtime(service: Annotated[Service, Depends(_ready)]) -> Runtime:
    assert service.runtime is not None
    return service.runtime


def get_engine(service: Annotated[Service, Depends(_ready)]) -> ClassifyService:
    assert service.engine is not None
    return service.engine


def require_key(request: Request, service: ServiceDep) -> None:
    """Changes to vocabularies need an API key when keys are configured (server/auth.py)."""
    service.api_keys.check(request)


def require_key_to_classify(request: Request, service: ServiceDep) -> None:
    if service.settings.auth_classify:
        service.api_keys.check(request)


def require_key_for_metrics(request: Request, service: ServiceDep) -> None:
    if service.settings.auth_metrics:
        service.api_keys.check(request)


RegistryDep = Annotated[VocabRegistry, Depends(get_registry)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
EngineDep = Annotated[ClassifyService, Depends(get_engine)]
