#!/usr/bin/env bash
# One-command set-up on Linux and macOS: a virtual environment (.venv, or the one already active)
# with the pinned packages, the offline model's weights and the lab. The steps live in
# tools/setup_lab.py (standard library only; on Windows: py -3 tools\setup_lab.py).
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  py="$VIRTUAL_ENV/bin/python"          # an active venv: install into it, no venv inside a venv
elif command -v python3 >/dev/null 2>&1; then
  py=python3                            # stock Debian/Ubuntu/macOS have python3, maybe no python
elif command -v python >/dev/null 2>&1; then
  py=python
else
  echo "setup: no python3 on the PATH: install Python 3.11 or newer" \
       "(Debian/Ubuntu: sudo apt install python3 python3-venv; macOS, Windows: python.org)." >&2
  exit 1
fi
exec "$py" tools/setup_lab.py "$@"
