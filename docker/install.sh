#!/usr/bin/env bash
# The one install recipe: the README's `make setup`, CI and both images run this script.
# Usage: docker/install.sh cpu|cuda PYTHON
# PYTHON is the interpreter to install into (a venv's python, or the image's).
set -euo pipefail
variant=${1:?usage: install.sh cpu|cuda PYTHON}
python=${2:?usage: install.sh cpu|cuda PYTHON}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "$variant" in
  cpu | cuda) ;;
  *) echo "install.sh: unknown variant '$variant' (cpu or cuda)" >&2; exit 2 ;;
esac
"$python" -m pip install --upgrade pip
"$python" -m pip install -r "$root/requirements/$variant.txt"
"$python" -m pip install --no-deps -r "$root/requirements/torchrec.txt"
# strict editable mode: `protorec.ot` maps onto ot/ without putting the repository root
# on sys.path, so `import ot` keeps finding POT.
"$python" -m pip install -e "$root" --config-settings editable_mode=strict
