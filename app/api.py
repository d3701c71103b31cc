"""Mounts every domain's router (app/<domain>/router.py) under /api. Found, not listed: a new
domain's routes appear by existing. The operations routes (health, metrics) stay at the root."""

import importlib

from fastapi import APIRouter

from app import registry

ROOT_LEVEL = {"app.ops.router"}

api_router = APIRouter(prefix="/api")
for module_name in registry.domain_modules("router"):
    if module_name not in ROOT_LEVEL:
        api_router.include_router(importlib.import_module(module_name).router)
