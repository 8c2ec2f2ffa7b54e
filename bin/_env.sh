# Shared preamble of the bin/ scripts: source it, do not run it (`. "$(dirname "$0")/_env.sh"`).
# Sets ROOT (the checkout), VENV (SDFT_VENV, else .venv), PY (the venv's python), the runtime
# settings below, and sdft_setup (installs everything into VENV once; SDFT_SKIP_SETUP=1 uses VENV
# as it is). The Python scripts in bin/ get the same settings from this file through bin/_env.py.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SDFT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

# Runtime settings, each a default the caller's environment overrides. bin/_env.py parses these
# lines: keep them one `export NAME="${NAME:-VALUE}"` each.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"                      # small CPU models: one thread is fastest
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"                        # no Hub unless asked (the bundled model needs none)
export HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"    # no tokenizer threads fighting the engines
export VLLM_ENABLE_V1_MULTIPROCESSING="${VLLM_ENABLE_V1_MULTIPROCESSING:-0}"  # vLLM in process: faster start on CPU

sdft_setup() {
  if [ "${SDFT_SKIP_SETUP:-0}" != 1 ]; then "$ROOT/bin/setup"; fi
}
