#!/usr/bin/env bash
# The original's settings on one GPU machine without network access, window after window:
#
#   make device-kit DATA="PATH/Semantic segmentation dataset"   # here: wheels + the dataset, <= 60 MiB
#   bash benchmarks/gpu_full_run.sh .device-kit "$OUT"            # there, first window
#   bash benchmarks/gpu_full_run.sh .device-kit "$OUT" PREVIOUS   # there, next window, on a bare machine
#
# Installs the kit with pip --no-index, then runs notebooks 01->04 at `--profile full` on the
# real data, on JAX, with the in-process search engine and bf16. It stops itself before
# SEGLIB_TIME_LIMIT (default 560 s; SIGTERM: the running trial is handed back and everything
# finished is kept). A finished run leaves 4 files in OUT: run.log, timings.json (seconds of
# every stage), the report's markdown, and report.tar.gz (the report with its images and the
# records its numbers come from). A stopped one leaves run.log, timings.json, state.tar.gz
# (benchmarks/carry_state.py: the searches' state and records, no model files) and
# compile-cache.tar.gz (the programs JAX compiled, as many as fit): copy those into the
# checkout (e.g. .device-kit/previous/) and pass that folder as PREVIOUS next time.
# The run folder, the dataset and JAX's compile cache live under SEGLIB_GPU_DIR (default
# /var/tmp/seglib-gpu), the same absolute paths on every machine: the run's records hold them,
# and JAX's cache keys hold the cache's path.
set -u
KIT=${1:?usage: gpu_full_run.sh KIT OUT [PREVIOUS]}
OUT=${2:?usage: gpu_full_run.sh KIT OUT [PREVIOUS]}
PREVIOUS=${3:-}  # what an earlier window left in its OUT
LIMIT=${SEGLIB_TIME_LIMIT:-560}   # seconds before SIGTERM; the run then needs up to ~30 s to stop
HOME_DIR=${SEGLIB_GPU_DIR:-/var/tmp/seglib-gpu}
RUN=${SEGLIB_RUN_DIR:-$HOME_DIR/run}
PROFILE=${SEGLIB_PROFILE:-full}  # quick: what the kit's test runs on a CPU
read -r -a EXTRA <<< "${SEGLIB_PARAMS:-}"  # more settings, e.g. "-p epochs=2" (the test's)
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3} sh "$KIT/install.sh" || exit 1
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
# Under the fixed folder too: JAX puts the cache's path in every program's key, so a carried
# cache serves the next machine only at the same path.
export SEGLIB_COMPILE_CACHE=${SEGLIB_COMPILE_CACHE:-$HOME_DIR/compile-cache}
DATA=()  # the kit's dataset (copied to a fixed path), or the embedded one for a kit built --no-data
if [ -d "$KIT/data" ]; then
    found=$(ls -d "$KIT"/data/*/ | head -n 1)
    mkdir -p "$HOME_DIR/data" && cp -r "$found" "$HOME_DIR/data/" || exit 1
    DATA=(--data "$HOME_DIR/data/$(basename "$found")")
fi
if [ -n "$PREVIOUS" ]; then
    "${PYTHON:-python3}" benchmarks/carry_state.py restore "$PREVIOUS" "$RUN" --cache "$SEGLIB_COMPILE_CACHE" || exit 1
fi
# files, not programs: XLA's autotuning results sit beside the compiled programs
cached() { find "$SEGLIB_COMPILE_CACHE" -type f 2>/dev/null | wc -l; }
echo "gpu_full_run: $(cached) files in the compile cache $SEGLIB_COMPILE_CACHE before the run" | tee "$OUT/run.log"
timeout -s TERM -k 45 "$LIMIT" "${PYTHON:-python3}" -m seglib.cli run --profile "$PROFILE" --out "$RUN" "${DATA[@]}" \
    --notebooks notebooks -p precision=${SEGLIB_PRECISION:-bf16} -p engine=local "${EXTRA[@]}" 2>&1 | tee -a "$OUT/run.log"
status=${PIPESTATUS[0]}
echo "gpu_full_run: $(cached) files in the compile cache $SEGLIB_COMPILE_CACHE after the run" | tee -a "$OUT/run.log"
"${PYTHON:-python3}" benchmarks/run_timings.py "$RUN" > "$OUT/timings.json"
if [ "$status" = 0 ]; then
    cp "$RUN/docs/hyperparameter-optimization.md" "$OUT/"
    tar -czf "$OUT/report.tar.gz" -C "$RUN" docs timings.json
else
    "${PYTHON:-python3}" benchmarks/carry_state.py pack "$RUN" "$OUT" --cache "$SEGLIB_COMPILE_CACHE" \
        --kit "$KIT" ${PREVIOUS:+--previous "$PREVIOUS"} || status=1
    [ -f "$OUT/state.tar.gz" ] && echo "gpu_full_run: not finished; to continue on the next machine, bring $OUT back" \
        "and run: bash benchmarks/gpu_full_run.sh $KIT NEW_OUT FOLDER_WITH_STATE"
fi
echo "gpu_full_run: seglib run exited $status; $(du -sh "$OUT" | cut -f1) in $OUT"
exit "$status"
