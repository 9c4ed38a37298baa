#!/usr/bin/env bash
# One prepared GPU check (issue 15, item 5), <= 8 minutes on one H100 (the step timeouts add up
# to 450 s): run it whenever a GPU machine is available, put the numbers in docs/benchmarks.md.
#
#   benchmarks/gpu_check.sh                 # writes ./gpu_check_out/gpu_check.json (+ one log per step)
#   OUT=/some/folder benchmarks/gpu_check.sh
#
# Steps, each with its own timeout (seconds; a step that runs out is recorded with rc 124 and the
# next one runs):
#   cuda_tests  150  python -m pytest -q -m "cuda or not cuda" tests/ops -k cuda   (CUDA vs CPU, every ROI variant)
#   roi_ops      60  python benchmarks/roi_ops.py --device cuda --json roi_ops.json
#   train_step   60  python benchmarks/train_step.py --device cuda --preset full --json train_step.json
#   fit         130  python train.py fit --config configs/quickstart.yaml --trainer.accelerator gpu
#                    --trainer.precision bf16-mixed --trainer.max_steps 300 --trainer.default_root_dir $OUT/qs
#   evaluate     50  python evaluate.py $OUT/qs/checkpoints/last.ckpt --output $OUT/qs/eval --device cuda
#                    --precision bf16-mixed
# gpu_check.json: the machine (GPU name, torch, CUDA), per step the command, exit code, seconds
# and log file, and key numbers read from the steps' outputs (pytest's counts, roi_ops rows,
# train_step images/s and ratio, fit steps/s, bbox AP). Where no CUDA device exists it records
# "no CUDA device", runs nothing and exits 0. Exit code: 0 when every step passed (or no GPU),
# 1 when a step failed or timed out.
# Python: $PYTHON, else the checkout's .venv/bin/python, else python on PATH.
# GPU_CHECK_WITHOUT_CUDA=1 runs the steps on a machine without CUDA (each fails fast): a test of
# this script's own bookkeeping, not of the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python; fi
STEPS="$OUT/steps.jsonl"
: > "$STEPS"
export DETECTOR_CACHE="${DETECTOR_CACHE:-$OUT/cache}"  # the quickstart's synthetic data, generated once

# ---- the machine; stop here without a CUDA device
if ! "$PY" - "$OUT/gpu_check.json" <<'EOF'
import json, os, platform, sys, time
try:
    import torch
    cuda = torch.cuda.is_available()
    info = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda, "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_count": torch.cuda.device_count() if cuda else 0}
except Exception as e:  # noqa: BLE001 - a broken install is reported, not a crash
    cuda, info = False, {"cuda": False, "torch_error": f"{type(e).__name__}: {e}"}
info.update(host=platform.node(), python=platform.python_version(), started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
if not cuda and os.environ.get("GPU_CHECK_WITHOUT_CUDA") == "1":  # bookkeeping test: steps run and fail
    info["note"] = "GPU_CHECK_WITHOUT_CUDA=1: steps run without a CUDA device (they are expected to fail)"
    cuda = True
if not cuda:
    info["status"] = "no CUDA device"
    info["steps"] = {}
    with open(sys.argv[1], "w") as f:
        json.dump(info, f, indent=2)
with open(sys.argv[1] + ".machine", "w") as f:
    json.dump(info, f)
sys.exit(0 if cuda else 3)
EOF
then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing run; recorded in $OUT/gpu_check.json"
    rm -f "$OUT/gpu_check.json.machine"
    exit 0
fi

step() {  # step NAME TIMEOUT_S CMD...: run with its log, append {name, command, rc, seconds, log}
    local name="$1" limit="$2"
    shift 2
    local log="$OUT/$name.log" t0 t1 rc
    echo "gpu_check: $name (timeout ${limit}s): $*"
    t0=$(date +%s.%N)
    timeout --signal=TERM --kill-after=15 "$limit" "$@" > "$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    "$PY" - "$STEPS" "$name" "$rc" "$t0" "$t1" "$log" "$limit" "$@" <<'EOF'
import json, shlex, sys
steps, name, rc, t0, t1, log, limit, *cmd = sys.argv[1:]
with open(steps, "a") as f:
    f.write(json.dumps({"name": name, "command": shlex.join(cmd), "rc": int(rc), "timed_out": int(rc) in (124, 137),
                        "seconds": round(float(t1) - float(t0), 1), "timeout_s": int(limit), "log": log}) + "\n")
EOF
    echo "gpu_check: $name rc=$rc ($(tail -n 1 "$log" | cut -c1-160))"
}

step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider -m "cuda or not cuda" tests/ops -k cuda
step roi_ops 60 "$PY" benchmarks/roi_ops.py --device cuda --json "$OUT/roi_ops.json"
step train_step 60 "$PY" benchmarks/train_step.py --device cuda --preset full --repeats 3 --json "$OUT/train_step.json"
step fit 130 "$PY" train.py fit --config configs/quickstart.yaml --trainer.accelerator gpu \
    --trainer.precision bf16-mixed --trainer.max_steps 300 --trainer.default_root_dir "$OUT/qs"
step evaluate 50 "$PY" evaluate.py "$OUT/qs/checkpoints/last.ckpt" --output "$OUT/qs/eval" --overwrite true \
    --device cuda --precision bf16-mixed

# ---- one JSON: the machine, the steps, the key numbers
"$PY" - "$OUT" <<'EOF'
import json, re, sys, time
from pathlib import Path

out = Path(sys.argv[1])
doc = json.loads((out / "gpu_check.json.machine").read_text())
steps = {s["name"]: s for s in map(json.loads, (out / "steps.jsonl").read_text().splitlines())}


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def tail(name, n=200):
    try:
        return (out / f"{name}.log").read_text(errors="replace")[-20000:]
    except OSError:
        return ""


# pytest: "12 passed, 3 skipped in 40.1s"
counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail("cuda_tests")))
steps.get("cuda_tests", {})["numbers"] = counts
roi = load("roi_ops.json")
if roi and "roi_ops" in steps:
    steps["roi_ops"]["numbers"] = {"rows": len(roi.get("rows", [])), "fwd_ms": {
        f"{r['op']} {r.get('shape')}": round(r["fwd_ms"], 4) for r in roi.get("rows", []) if "fwd_ms" in r}}
ts = load("train_step.json")
if ts and "train_step" in steps:
    c = ts.get("comparison", {})
    steps["train_step"]["numbers"] = {"median_images_per_s": c.get("median_images_per_s"), "ratio": c.get("ratio"),
                                      "stages_ms_total": {k: v.get("total") for k, v in (ts.get("stages_ms") or {}).items()}}
if "fit" in steps:
    m = re.findall(r"max_steps=300 reached|Trainer.fit. stopped", tail("fit"))
    steps["fit"]["numbers"] = {"steps": 300, "steps_per_s_incl_startup": round(300 / steps["fit"]["seconds"], 2)
                               if steps["fit"]["rc"] == 0 else None, "stopped_line_seen": bool(m)}
metrics = load("qs/eval/metrics.json")
if metrics and "evaluate" in steps:
    steps["evaluate"]["numbers"] = {"bbox": metrics.get("bbox"), "num_images": metrics.get("num_images"),
                                    "global_step": metrics.get("global_step")}
doc["steps"] = steps
doc["status"] = "ok" if all(s["rc"] == 0 for s in steps.values()) else "failed: " + ", ".join(
    f"{n} (rc {s['rc']}{', timed out' if s['timed_out'] else ''}, see {s['log']})" for n, s in steps.items() if s["rc"])
doc["total_seconds"] = round(sum(s["seconds"] for s in steps.values()), 1)
doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
(out / "gpu_check.json").write_text(json.dumps(doc, indent=2))
print(f"gpu_check: {doc['status']} in {doc['total_seconds']} s; wrote {out / 'gpu_check.json'}")
sys.exit(0 if doc["status"] == "ok" else 1)
EOF
rc=$?
rm -f "$OUT/gpu_check.json.machine"
exit $rc
