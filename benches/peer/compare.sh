#!/usr/bin/env bash
# qroute beside LiteLLM in the peer harness (harness/, a copy of the project's shared
# gateway-overhead harness; harness/README.md says how it measures): the same open-loop
# load straight to a mock upstream and through each gateway, in one go, on this machine.
# LiteLLM is installed from PyPI into a venv under $PEERBENCH_DIR (default /tmp/peerbench).
#
#   cargo build --release && bash benches/peer/compare.sh            # the README's table
#   QROUTE_RATES="1000 2000" LITELLM_RATES="10 50" bash benches/peer/compare.sh
#
# Writes the two Markdown tables, one under the other, to $PEERBENCH_DIR/peer-<date>.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HARNESS=$ROOT/benches/peer/harness
WORK=${PEERBENCH_DIR:-${TMPDIR:-/tmp}/peerbench}
export PEERBENCH_DIR=$WORK
cd "$ROOT"
[ -x target/release/qroute ] || { echo "build qroute first: cargo build --release" >&2; exit 2; }
OUT=$WORK/peer-$(date -u +%Y%m%d-%H%M%S).md
DELAYS=${DELAYS:-20}
DURATION=${DURATION:-15}

bash "$HARNESS/run.sh" --name qroute --gateway-cmd "bash $HARNESS/qroute.sh" --model auto \
    --rates "${QROUTE_RATES:-100 1000 2000 4000}" --delays "$DELAYS" --duration "$DURATION" | tee -a "$OUT.log"
bash "$HARNESS/run.sh" --litellm --rates "${LITELLM_RATES:-10 50 100}" --delays "$DELAYS" --duration "$DURATION" | tee -a "$OUT.log"
{
    echo "Machine: $(nproc) cores, $(uname -m); $(date -u +%Y-%m-%d); LiteLLM $(bash "$HARNESS/litellm.sh" --version)"
    for name in qroute litellm; do
        echo
        cat "$(ls -dt "$WORK"/results/"$name"-*/ | head -1)/results.md"
    done
} > "$OUT"
echo "tables in $OUT"
