"""The README's "Try it as a new user" walkthrough runs as written: its bash blocks, in order, in one
bash session (variables carry over), from a directory laid out like a clone (scripts/, .venv/ and
.run/ where the README expects them), against a `scripts/run` started here with API_PORT=0 and a
private run directory. Then the state it promises is checked over the API."""

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

from tests.fixtures.private_stack import PORT_VARS, ROOT, SUITE_VARS, PrivateStack

README = ROOT / "README.md"
START, END = "<!-- walkthrough", "<!-- /walkthrough -->"


def walkthrough() -> str:
    text = README.read_text()
    start = text.index(START)
    return text[start:text.index(END, start)]


def bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", walkthrough(), re.M | re.S)


def session_script(blocks: list[str]) -> str:
    """One script: each block between markers, stopping at the first failing command."""
    parts = ["set -eo pipefail"]
    for n, block in enumerate(blocks, 1):
        parts += [f"printf '\\n::block {n}\\n'", block.rstrip("\n"), f"printf '\\n::block {n} ok\\n'"]
    parts.append('printf "\\n::state ACCESS=%s ADMIN=%s\\n" "$ACCESS" "$ADMIN"')
    return "\n".join(parts) + "\n"


def get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def test_the_walkthrough_shows_what_a_clone_needs():
    blocks = bash_blocks()
    assert len(blocks) >= 5, "the walkthrough's bash blocks were not found (markers moved?)"
    code = "\n".join(blocks)
    assert "localhost:8000" not in code and "127.0.0.1:8000" not in code  # the port comes from .run/env
    assert ". .run/env" in code and ".run/outbox/" in code and "scripts/cli" in code
    assert not re.search(r"(^|\s)python3?\s", code), "use .venv/bin/python or scripts/cli"
    for call in re.findall(r"curl (?:[^\n]*\\\n)*[^\n]*", code):  # each curl with its continuation lines
        route = re.search(r"/api/[\w/-]+", call).group(0)
        if not route.startswith("/api/auth/"):
            assert 'Authorization: Bearer $' in call, f"no Authorization header shown: {call}"
        if route in ("/api/auth/register", "/api/auth/verify-email", "/api/auth/login", "/api/wallet/deposits",
                     "/api/wallet/refunds"):
            assert " -d " in call, f"the request body is not shown: {call}"
    assert "../" not in README.read_text(), "the README links outside the repository"
    assert "(docs/openapi.json)" in walkthrough() and "/docs" in walkthrough()


def test_the_walkthrough_runs_as_written(tmp_path):
    stack = PrivateStack(tmp_path, {"API_PORT": "0"}, script=True)
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("scripts", ".venv"):
        (clone / name).symlink_to(ROOT / name)
    (clone / ".run").symlink_to(stack.run_dir, target_is_directory=True)
    script = tmp_path / "walkthrough.sh"
    script.write_text(session_script(bash_blocks()))
    # A new user's shell: none of the suite's settings; scripts/cli finds this stack's run dir.
    env = {k: v for k, v in os.environ.items() if k not in SUITE_VARS + PORT_VARS}
    env["PEERTEST_RUN_DIR"] = str(stack.run_dir)
    try:
        stack.start(timeout=90)
        shell = subprocess.Popen(["bash", str(script)], cwd=clone, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = shell.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            output, _ = shell.communicate()
            raise AssertionError(f"the walkthrough hung\n{output[-4000:]}\n{stack.report()}") from None
        blocks = len(bash_blocks())
        done = re.findall(r"^::block (\d+) ok$", output, re.M)
        assert shell.returncode == 0 and len(done) == blocks, (
            f"block {len(done) + 1} of {blocks} failed (exit {shell.returncode}):\n{output[-4000:]}\n{stack.report()}")

        # What the walkthrough says happened.
        state = dict(re.findall(r"(ACCESS|ADMIN)=(\S+)", output.split("::state", 1)[1]))
        api = stack.run_env()["API_URL"]
        me = get(f"{api}/api/users/me", state["ACCESS"])
        assert (me["email"], me["role"], me["email_verified"]) == ("bea@example.com", "builder", True), me
        wallet = get(f"{api}/api/wallet", state["ACCESS"])
        assert (wallet["available_cents"], wallet["deposited_today_cents"]) == (4000, 5000), wallet
        refunds = get(f"{api}/api/wallet/refunds", state["ACCESS"])["items"]
        assert [(r["amount_cents"], r["status"]) for r in refunds] == [(1000, "succeeded")], refunds
        assert get(f"{api}/api/admin/ledger/check", state["ADMIN"])["ok"] is True
        assert "payment succeeded" in output and "ok=True" in output, output[-4000:]
        mails = [p for p in Path(stack.mail_dir).glob("*.eml") if "To: bea@example.com" in p.read_text()]
        assert len(mails) == 1, mails
    finally:
        stack.stop(timeout=25)
        stack.kill_everything()
