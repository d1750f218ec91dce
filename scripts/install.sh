#!/usr/bin/env bash
# Installs mixsup-monai and its dependencies into the active Python (3.10+), CPU or GPU machine.
# Order matters: torch first, pinned, so that nothing later resolves a free `torch` requirement
# (that would download several GB of CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade "pip>=23"
python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
# cuCIM reads slides on CPU without its CUDA dependencies (2.9 GB, and they make `import monai`
# print nvjpeg errors on CPU). GPU users: `pip install cucim-cu12` (with dependencies) instead.
python -m pip install --quiet --no-deps "cucim-cu12==26.10.0"
python -m pip install --quiet -c constraints.txt -e ".[dev]"
python -c "import mixsup_monai, monai, torch; print('mixsup-monai', mixsup_monai.__version__, '| monai', monai.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
