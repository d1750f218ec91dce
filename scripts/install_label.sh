#!/usr/bin/env bash
# Installs the MONAI Label stack (monailabel 0.8.5 + the dependencies its server imports) into the active Python,
# next to an installed mixsup-monai (bash scripts/install.sh first).
set -euo pipefail

usage() {
    cat <<EOF
Usage: bash scripts/install_label.sh [--python PY]

Installs, into PY (default \$PYTHON or python):
  1. this repo with its 'label' extra (pip install -e ".[label]"): the light dependencies the MONAI Label
     server imports (fastapi, uvicorn, itk-core + itk-io, SimpleITK, pydicom<3, ...; see pyproject.toml);
  2. monailabel==0.8.5 and pydicom-seg==0.4.1 with --no-deps: monailabel declares heavy dependencies that
     serving these bundles does not need (itk with all its modules ~1.5 GB, sam2, ninja, lmdb, tensorboard, ...),
     and pydicom-seg pins numpy<2 and jsonschema<4, which would downgrade this project's numpy / jsonschema.
Then checks that the server imports. Torch must already be installed (scripts/install.sh).
EOF
}

PY="${PYTHON:-python}"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PY="${2:?--python needs an executable}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; echo "install_label.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
"$PY" -c "import torch" 2>/dev/null || { echo "install_label.sh: torch is not installed in $PY: run bash scripts/install.sh first" >&2; exit 3; }
"$PY" -m pip install --quiet -c constraints.txt -e ".[label]"
"$PY" -m pip install --quiet --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import monailabel.app, monailabel.tasks.infer.bundle, mixsup_monai; import monailabel; print('monailabel', monailabel.__version__, 'server imports: ok')"
