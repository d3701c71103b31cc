# shellcheck shell=bash
# Shared helpers for scripts/run, scripts/test, scripts/bench and scripts/cli. Source it; don't
# execute it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
#   cd_repo_root
#   ensure_venv
#
# After ensure_venv, $VENV_PY is the virtualenv's interpreter.

REPO_ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"  # physical: the venv and pyproject.toml are here
VENV_DIR="$REPO_ROOT/.venv"
VENV_PY="$VENV_DIR/bin/python"
INSTALL_HASH_FILE="$VENV_DIR/.install-hash"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Go to the repository root. A relative PEERTEST_RUN_DIR is made absolute first, so it still
# means the directory the command was started from.
cd_repo_root() {
  if [[ -n "${PEERTEST_RUN_DIR:-}" && "$PEERTEST_RUN_DIR" != /* ]]; then
    export PEERTEST_RUN_DIR="$PWD/$PEERTEST_RUN_DIR"
  fi
  cd "$REPO_ROOT" || exit 1
}

# Print the path of a working Python 3.13 interpreter, or fail with advice.
find_python313() {
  local candidate root=""
  # 1. python3.13 on PATH, if it really runs (a pyenv shim may not). Resolve the shim.
  if command -v python3.13 >/dev/null 2>&1 && python3.13 -V >/dev/null 2>&1; then
    python3.13 -c 'import sys; print(sys.executable)'
    return 0
  fi
  # 2. pyenv's 3.13 install, even when the shim is not activated.
  if command -v pyenv >/dev/null 2>&1; then
    root="$(pyenv root 2>/dev/null || true)"
  fi
  root="${root:-${PYENV_ROOT:-$HOME/.pyenv}}"
  for candidate in "$root"/versions/3.13*/bin/python3.13; do
    if [[ -x "$candidate" ]] && "$candidate" -V >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  # 3. System locations.
  for candidate in /usr/bin/python3.13 /usr/local/bin/python3.13; do
    if [[ -x "$candidate" ]] && "$candidate" -V >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  cat >&2 <<'EOF'
error: Python 3.13 was not found.
  Looked for: `python3.13` on PATH, $(pyenv root)/versions/3.13*/bin/python3.13,
  /usr/bin/python3.13 and /usr/local/bin/python3.13.
  Install Python 3.13 (for example `pyenv install 3.13` or your OS package manager)
  and run this command again.
EOF
  return 1
}

# Hash of everything that decides what gets installed into the venv.
_install_hash() {
  cat "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/constraints.txt" | sha256sum | cut -d' ' -f1
}

# Create .venv if needed and (re)install the project when pyproject.toml or
# constraints.txt changed since the last successful install. --quiet: say nothing when the
# venv is reused.
ensure_venv() {
  local py want have=""
  if [[ ! -x "$VENV_PY" ]] || ! "$VENV_PY" -V >/dev/null 2>&1; then
    py="$(find_python313)" || exit 1
    say "creating .venv with $("$py" -V 2>&1) ($py)"
    rm -rf "$VENV_DIR"
    "$py" -m venv "$VENV_DIR" || die "could not create $VENV_DIR"
  fi
  want="$(_install_hash)"
  [[ -f "$INSTALL_HASH_FILE" ]] && have="$(cat "$INSTALL_HASH_FILE")"
  if [[ "$want" == "$have" ]]; then
    [[ "${1:-}" == --quiet ]] || say "reusing .venv (dependencies unchanged)"
    return 0
  fi
  say "installing dependencies into .venv (first run takes a minute or two)"
  local log="$VENV_DIR/pip-install.log"
  if ! "$VENV_PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >"$log" 2>&1; then
    cat "$log" >&2
    die "could not upgrade pip (log: $log)"
  fi
  if ! "$VENV_PY" -m pip install --disable-pip-version-check --progress-bar off \
      -c constraints.txt -e ".[embedded,dev]" >"$log" 2>&1; then
    grep -iE 'error|conflict|requires|not find|no matching' "$log" >&2 || tail -n 40 "$log" >&2
    die "pip install failed (full log: $log)"
  fi
  printf '%s\n' "$want" >"$INSTALL_HASH_FILE"
  say "dependencies installed"
}
