#!/usr/bin/env bash
# Run metarl on a Ray cluster as a Ray job.
#
#   scripts/ray_job_example.sh                 # starts a loopback-only head node here, submits, stops it
#   RAY_ADDRESS=http://HEAD:8265 scripts/ray_job_example.sh --no-head    # submit to a running cluster
#
# Jobs (the arguments after the options go to `python -m metarl.train`; default: the RL job):
#   scripts/ray_job_example.sh env=procgen agent=srwm runner=ray runner.num_actors=2        # IMPALA, Ray actors
#   scripts/ray_job_example.sh env=glyphs agent=srwm runner=ray runner.num_workers=2        # few-shot, Ray Train
#   scripts/ray_job_example.sh env=lm agent=transformer agent.ff=moe runner=ray runner.num_workers=2   # LM, Ray Train
#   (on GPUs: runner.use_gpu=true, one GPU per worker, NCCL; on several machines runner.storage_path=<shared path>)
#
# How the code gets to the cluster. The cluster needs metarl's dependencies (torch, ray, gymnasium, ...)
# but not metarl itself: this script builds a wheel of the checkout here, installs it (no dependencies)
# into a temporary folder, and ships the installed `metarl/` package with the runtime env's `py_modules`.
# Ray zips that folder, unpacks it on every node and puts it first on PYTHONPATH of the job's driver and of
# every worker, so the Ray actors import the same code as the driver. The install is what makes
# envs/, agents/, fewshot/ and configs/ importable as metarl.envs, ... (pyproject's `package-dir`); a plain
# copy of the checkout has no metarl/envs.
#   - Not the wheel itself in py_modules: Ray installs a .whl with `pip install <wheel> --target=<dir>`,
#     which ignores what is installed and pulls every dependency (torch, ray, ...) into the job again.
#   - The checkout still goes as the working dir (files ignored by .gitignore, such as .venv and runs/,
#     stay here): the entrypoint runs in it, so hydra.run.dir=runs/ray-job lands in the job's copy and
#     scripts/ are there for other entrypoints. Its metarl/ folder is excluded: `python -m` puts the
#     working dir before PYTHONPATH on sys.path, and that folder would shadow the shipped package.
#     `excludes` applies to the py_modules folder too (paths relative to it), so it must not name
#     envs/, agents/, ...: those are folders of the installed package.
#   - The entrypoint first prints where metarl was imported from and fails if any metarl module came from
#     elsewhere (e.g. a subpackage missing from the wheel but found through an editable install).
#
# Token authentication (Ray >= 2.60 enables it by default): the head node and every client need the same
# token. `ray start --head` creates one in ~/.ray/auth_token; on other machines pass it with
# RAY_AUTH_TOKEN=<token> (or RAY_AUTH_TOKEN_PATH=<file>), e.g. `export RAY_AUTH_TOKEN=$(ray get-auth-token)`
# on the head. This script's own head node binds to 127.0.0.1 only and runs with RAY_AUTH_MODE=disabled,
# which is safe only because nothing outside this machine can reach it.
# Extra arguments after the options are passed to `python -m metarl.train`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3)}"    # the interpreter with metarl's dependencies (e.g. .venv/bin/python);
                                              # it also builds the wheel: needs pip, setuptools>=77 and wheel
RAY="${RAY:-$(dirname "$PYTHON")/ray}"        # `ray job` needs ray[default]
START_HEAD=1
if [[ "${1:-}" == "--no-head" ]]; then START_HEAD=0; shift; fi
TRAIN_ARGS=("$@")
if [[ ${#TRAIN_ARGS[@]} -eq 0 ]]; then
  TRAIN_ARGS=(env=procgen agent=srwm runner=ray runner.num_actors=2)
fi

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/metarl-ray-job.XXXXXX")"
HEAD_STARTED=0
cleanup() {
  if [[ $HEAD_STARTED -eq 1 ]]; then "$RAY" stop --force >/dev/null 2>&1 || true; fi
  rm -rf "$STAGE"
}
trap cleanup EXIT

# Build and install offline (--no-index, --no-build-isolation: nothing is downloaded). DIST_EXTRA_CONFIG
# moves setuptools' build/ and metarl.egg-info/ into the temporary folder: the checkout stays untouched and
# no stale file from an old build/ can end up in the wheel.
printf '[build]\nbuild_base = %s\n[egg_info]\negg_base = %s\n' "$STAGE/build" "$STAGE" >"$STAGE/setup.cfg"
DIST_EXTRA_CONFIG="$STAGE/setup.cfg" "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --no-index \
    --wheel-dir "$STAGE/dist" .
"$PYTHON" -m pip install --quiet --no-deps --no-index --no-compile --target "$STAGE/site" "$STAGE"/dist/metarl-*.whl

RUNTIME_ENV="$("$PYTHON" -c 'import json, sys
print(json.dumps({"working_dir": ".", "excludes": ["/metarl/"], "py_modules": [sys.argv[1]]}))' "$STAGE/site/metarl")"

if [[ $START_HEAD -eq 1 ]]; then
  export RAY_AUTH_MODE=disabled
  "$RAY" start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --port=6390 \
      --dashboard-port=8266 --num-cpus="${NUM_CPUS:-2}" --disable-usage-stats
  HEAD_STARTED=1
  export RAY_ADDRESS=http://127.0.0.1:8266
fi

# One line of Python (the entrypoint goes through /bin/sh): import what the job uses, say where it came from.
PROBE='import os, sys, metarl, metarl.train, metarl.rl.ray_runner, metarl.engine.ray_train, metarl.envs, metarl.agents, metarl.fewshot, metarl.configs; '
PROBE+='root = os.path.dirname(os.path.realpath(metarl.__file__)); '
PROBE+='other = sorted(n for n, m in list(sys.modules.items()) if n.split(".")[0] == "metarl" and getattr(m, "__file__", None) '
PROBE+='and not os.path.realpath(m.__file__).startswith(root + os.sep)); '
PROBE+='print("[metarl] package imported from", root, flush=True); '
PROBE+='sys.exit("[metarl] not from the shipped package: " + ", ".join(other)) if other else None'
# The entrypoint names the interpreter explicitly so the job runs with the one that has the dependencies.
ENTRYPOINT="$(printf '%q ' "$PYTHON" -c "$PROBE") && $(printf '%q ' "$PYTHON" -m metarl.train "${TRAIN_ARGS[@]}" \
    hydra.run.dir=runs/ray-job)"
"$RAY" job submit --address "$RAY_ADDRESS" --runtime-env-json "$RUNTIME_ENV" -- sh -c "$ENTRYPOINT"
