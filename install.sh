#!/usr/bin/env bash
# Installs rdnas and everything it needs into the current Python environment (a virtual environment is best).
#   ./install.sh        the package, its native extension rdnas._C and its run-time dependencies
#   ./install.sh test   the same plus the test dependencies (pytest, pytest-benchmark, ...)
#   ./install.sh docs   the same plus the documentation tools (Sphinx, MyST; pinned in pyproject.toml's docs extra)
# A torch that is already installed is kept (rdnas needs >= 2.4); without one, torch==2.13.0 is installed
# (see DEVELOPERS.md). The extension is built against that torch with --no-build-isolation.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

case "${1:-}" in
  "") target="." ;;
  test) target=".[test]" ;;
  docs) target=".[docs]" ;;
  *) echo "install.sh: unknown argument '$1' (expected nothing, 'test' or 'docs')" >&2; exit 2 ;;
esac

if "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "install.sh: keeping torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
  echo "install.sh: no torch found; installing torch==2.13.0"
  "$PYTHON" -m pip install torch==2.13.0
fi
"$PYTHON" -m pip install "setuptools>=64" wheel ninja pybind11 numpy packaging
"$PYTHON" -m pip install --no-build-isolation "$target"
