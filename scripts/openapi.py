"""Print the API's OpenAPI document, as /openapi.json serves it in dev:

    .venv/bin/python scripts/openapi.py > docs/openapi.json

It is generated with ENVIRONMENT=dev and every other setting at its default: the environment's
settings and any .env file are ignored, so the committed file does not depend on who made it.
tests/ops/test_openapi.py fails when docs/openapi.json is not what this prints.
"""

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def document() -> dict:
    sys.path.insert(0, str(ROOT))
    from app.config import Settings

    settings_names = {name.upper() for name in Settings.model_fields}
    for key in [k for k in os.environ if k.upper() in settings_names]:
        del os.environ[key]
    os.environ["ENVIRONMENT"] = "dev"
    with tempfile.TemporaryDirectory() as empty:
        os.chdir(empty)  # no .env here
        from app.main import app

        return app.openapi()


def main() -> None:
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # anything the app logs while starting stays off the document
        doc = document()
    out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
