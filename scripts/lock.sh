#!/usr/bin/env bash
# Writes requirements.lock: every package the services' image installs (pyproject.toml's
# dependencies, theirs, and the build backend), pinned with the hashes of their files, at the
# versions installed in .venv where it has them (the versions `make test` ran against).
# Run it after changing a dependency in pyproject.toml; the Dockerfile installs from the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3.11 -m venv "$work/venv"
"$work/venv/bin/pip" install -q pip-tools==7.6.2
.venv/bin/pip freeze --exclude-editable | grep -v '^community-levels' >"$work/tested.txt"
PIP_FIND_LINKS= CUSTOM_COMPILE_COMMAND=scripts/lock.sh "$work/venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
  --build-deps-for wheel --no-emit-find-links --constraint "$work/tested.txt" \
  --output-file requirements.lock pyproject.toml
# The constraint file's path is temporary: name what it was.
sed -i "s|$work/tested.txt|.venv (pip freeze)|" requirements.lock
