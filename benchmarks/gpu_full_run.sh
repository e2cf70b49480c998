#!/usr/bin/env bash
# The original's settings on one GPU machine without network access, in one command:
#
#   make device-kit DATA="PATH/Semantic segmentation dataset"   # here: wheels + the dataset, <= 60 MiB
#   bash benchmarks/gpu_full_run.sh .device-kit "$OUT"            # there (copy .device-kit with the checkout)
#
# Installs the kit with pip --no-index, then runs notebooks 01->04 at `--profile full` on the
# real data, on JAX, with the in-process search engine and bf16. It stops itself before
# SEGLIB_TIME_LIMIT (default 560 s; SIGTERM: the running trial is handed back and everything
# finished is kept; run it again on the same machine to continue) and leaves at most 4 files in
# OUT: run.log, timings.json (seconds of every stage), the report's markdown, and report.tar.gz
# (the report with its images and the records its numbers come from).
set -u
KIT=${1:?usage: gpu_full_run.sh KIT OUT}
OUT=${2:?usage: gpu_full_run.sh KIT OUT}
LIMIT=${SEGLIB_TIME_LIMIT:-560}   # seconds before SIGTERM; the run then needs up to ~30 s to stop
RUN=${SEGLIB_RUN_DIR:-runs/gpu-full}
PROFILE=${SEGLIB_PROFILE:-full}  # quick: what the kit's test runs on a CPU
read -r -a EXTRA <<< "${SEGLIB_PARAMS:-}"  # more settings, e.g. "-p epochs=2" (the test's)
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3} sh "$KIT/install.sh" || exit 1
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export SEGLIB_COMPILE_CACHE=${SEGLIB_COMPILE_CACHE:-$PWD/runs/compile-cache}
DATA=()  # the kit's dataset, or the embedded one for a kit built --no-data
[ -d "$KIT/data" ] && DATA=(--data "$(ls -d "$KIT"/data/*/ | head -n 1)")
timeout -s TERM -k 45 "$LIMIT" "${PYTHON:-python3}" -m seglib.cli run --profile "$PROFILE" --out "$RUN" "${DATA[@]}" \
    --notebooks notebooks -p precision=${SEGLIB_PRECISION:-bf16} -p engine=local "${EXTRA[@]}" 2>&1 | tee "$OUT/run.log"
status=${PIPESTATUS[0]}
"${PYTHON:-python3}" benchmarks/run_timings.py "$RUN" > "$OUT/timings.json"
if [ -f "$RUN/docs/hyperparameter-optimization.md" ]; then
    cp "$RUN/docs/hyperparameter-optimization.md" "$OUT/"
    tar -czf "$OUT/report.tar.gz" -C "$RUN" docs timings.json
fi
echo "gpu_full_run: seglib run exited $status; $(du -sh "$OUT" | cut -f1) in $OUT"
exit "$status"
