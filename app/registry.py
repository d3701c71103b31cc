"""What the app is made of, found rather than listed: every module of every package under app/ is
imported once at start (the API, each worker and the CLI call load()), so the webhook handlers,
invariant checks and periodic jobs registered where they are defined all exist in every process,
and every Beanie document is initialised. A new domain only has to exist; there is no list to
forget it in.
"""

import importlib
import importlib.util
import pkgutil
from functools import cache

import beanie

import app

SHARED_PACKAGES = ("kit", "integrations")


@cache
def load() -> tuple[str, ...]:
    """Import every module of every package under app/; returns their names."""
    loaded = []
    for info in sorted(pkgutil.iter_modules(app.__path__), key=lambda i: i.name):
        if info.ispkg:
            for name in _all_modules(f"app.{info.name}"):
                loaded.append(importlib.import_module(f"app.{info.name}.{name}").__name__)
    return tuple(loaded)


def domain_modules(name: str) -> list[str]:
    """`app.<domain>.<name>` for every domain package that has one, in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(app.__path__), key=lambda i: i.name):
        module = f"app.{info.name}.{name}"
        if info.ispkg and info.name not in SHARED_PACKAGES and importlib.util.find_spec(module) is not None:
            found.append(module)
    return found


def _all_modules(package: str) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(importlib.import_module(package).__path__) if not m.ispkg)


def document_models() -> list[type[beanie.Document]]:
    """Every Beanie document class defined in the app."""
    load()
    found: dict[str, type[beanie.Document]] = {}
    stack = list(beanie.Document.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("app.") and "Settings" in cls.__dict__:
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]
