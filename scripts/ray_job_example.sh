#!/usr/bin/env bash
# Run metarl on a Ray cluster as a Ray job.
#
#   scripts/ray_job_example.sh                 # starts a loopback-only head node here, submits, stops it
#   RAY_ADDRESS=http://HEAD:8265 scripts/ray_job_example.sh --no-head    # submit to a running cluster
#
# Token authentication (Ray >= 2.60 enables it by default): the head node and every client need the same
# token. `ray start --head` creates one in ~/.ray/auth_token; on other machines pass it with
# RAY_AUTH_TOKEN=<token> (or RAY_AUTH_TOKEN_PATH=<file>), e.g. `export RAY_AUTH_TOKEN=$(ray get-auth-token)`
# on the head. This script's own head node binds to 127.0.0.1 only and runs with RAY_AUTH_MODE=disabled,
# which is safe only because nothing outside this machine can reach it.
# Extra arguments after the options are passed to `python -m metarl.train`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3)}"    # the interpreter that has metarl installed (e.g. .venv/bin/python)
RAY="${RAY:-$(dirname "$PYTHON")/ray}"        # `ray job` needs ray[default]
START_HEAD=1
if [[ "${1:-}" == "--no-head" ]]; then START_HEAD=0; shift; fi
TRAIN_ARGS=("$@")
if [[ ${#TRAIN_ARGS[@]} -eq 0 ]]; then
  TRAIN_ARGS=(env=procgen agent=srwm runner=ray runner.num_actors=2)
fi

if [[ $START_HEAD -eq 1 ]]; then
  export RAY_AUTH_MODE=disabled
  "$RAY" start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --port=6390 \
      --dashboard-port=8266 --num-cpus="${NUM_CPUS:-2}" --disable-usage-stats
  trap '"$RAY" stop --force >/dev/null 2>&1 || true' EXIT
  export RAY_ADDRESS=http://127.0.0.1:8266
fi

# --working-dir ships this checkout (files ignored by .gitignore, such as .venv and runs/, stay here);
# the entrypoint names the interpreter explicitly so the job runs with the one that has the dependencies.
"$RAY" job submit --address "$RAY_ADDRESS" --working-dir . -- \
    "$PYTHON" -m metarl.train "${TRAIN_ARGS[@]}" hydra.run.dir=runs/ray-job
