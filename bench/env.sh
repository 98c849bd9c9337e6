# Sourced by the bench shell scripts (`. "$(dirname "$0")/env.sh"`): strict mode, the repository root
# as the working folder, the ../shared data and models, the venv's python, and no hub traffic.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SHARED:-../shared}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
