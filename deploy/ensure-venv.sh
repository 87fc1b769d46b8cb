#!/usr/bin/env bash
# Create the project's virtualenv; on Debian/Ubuntu install python3-venv first if needed.
set -euo pipefail
python="$1" venv="$2"
if ! "$python" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
  echo "gremio: needs Python 3.11 to 3.13; $python is $("$python" --version 2>&1). Set PYTHON=python3.12 (say) for make." >&2
  exit 1
fi
if "$python" -m venv "$venv" 2>/dev/null; then exit 0; fi
rm -rf "$venv"
pkg="python3-venv"
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "gremio: cannot create a virtualenv; install it with: sudo apt-get install -y $pkg" >&2; exit 1
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
"$python" -m venv "$venv"
