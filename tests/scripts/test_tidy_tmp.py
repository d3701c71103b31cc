"""scripts/test leaves no temporary folders behind, after a failing run too: pytest's tmp_path,
the suite's mail outbox (tests/conftest.py makes one with mkdtemp) and whatever the tests make
with tempfile all live in a private TMPDIR that the stack removes when it stops."""

import os
import subprocess
from pathlib import Path

from tests.fixtures.private_stack import ROOT

PROBE = '''\
import os
import tempfile
from pathlib import Path


def test_makes_temporary_folders(tmp_path):
    (tmp_path / "evidence.bin").write_bytes(b"x")
    made = tempfile.mkdtemp(prefix="probe-")
    Path(os.environ["PROBE_RECORD"]).write_text(
        "\\n".join([os.environ["TMPDIR"], str(tmp_path), made, os.environ["MAIL_OUTBOX_DIR"]]))


def test_fails():
    assert False, "scripts/test must clean up after a failing run too"
'''


def test_scripts_test_leaves_no_temporary_folders(tmp_path):
    outer_tmp, run_dir, record = tmp_path / "tmp", tmp_path / "run", tmp_path / "record"
    outer_tmp.mkdir()
    probe = tmp_path / "probe" / "test_probe.py"
    probe.parent.mkdir()
    probe.write_text(PROBE)
    # The suite's own servers (scripts/test starts none when they are given), a private run dir,
    # and TMPDIR where we can see what is left. tests/conftest.py is loaded as a plugin, so its
    # mkdtemp'd outbox is made as in a real run.
    env = {**os.environ, "TMPDIR": str(outer_tmp), "PEERTEST_RUN_DIR": str(run_dir), "PROBE_RECORD": str(record)}
    done = subprocess.run(
        ["bash", "scripts/test", "-q", "-p", "no:randomly", "-c", "pyproject.toml", "-p", "tests.conftest", str(probe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 1, output  # one test failed, and that is reported
    assert "1 failed, 1 passed" in done.stdout, output
    private, *made = record.read_text().splitlines()
    assert Path(private).parent == outer_tmp and all(p.startswith(private + "/") for p in made), (private, made)
    assert not any(Path(p).exists() for p in [private, *made]), [p for p in [private, *made] if Path(p).exists()]
    assert list(outer_tmp.iterdir()) == [], list(outer_tmp.iterdir())
