#!/usr/bin/env bash
# PyTorch's Partial FC (arcface_torch's PartialFC_V2 sampling, on one process) against the full
# margin softmax as the number of identities grows: step time and peak RSS of the tiny ArcFace
# baseline at 10^4, 10^5 and 10^6 classes, sample_rate 1.0 and 0.1, on this machine's CPU.
# Writes what scripts/bench_torch.py printed to assets/partial_fc_torch.txt. One configuration
# per process (peak RSS is per process); ROUNDS rounds (default 3) with the configurations
# alternating within each, then a summary of the fastest step of each configuration: on a
# shared 2-core machine the step time drifts by tens of percent between invocations (and by up
# to 10x while a compiler runs beside it: each command line ends with the 1-minute load average
# at its start). About 45 s a round on 2 idle cores.
#
#   bash scripts/partial_fc_torch.sh
#   PYTHON=/path/to/python ROUNDS=1 bash scripts/partial_fc_torch.sh
#
# PYTHON defaults to the venv ~/.cache/torch-venv (python3 -m venv ~/.cache/torch-venv &&
# ~/.cache/torch-venv/bin/pip install torch numpy), else python3. A configuration that fails
# (out of memory, or over LIMIT seconds, default 1200) is recorded with its exit status and the
# end of its stderr instead of a JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$HOME/.cache/torch-venv/bin/python" ]; then
        python="$HOME/.cache/torch-venv/bin/python"
    else
        python=python3
    fi
fi
rounds="${ROUNDS:-3}"
limit="${LIMIT:-1200}"
out=assets/partial_fc_torch.txt
version=$("$python" -c 'import torch; print(torch.__version__)')
common="backbone=tiny groups=0 batch=64 steps=5 warmup=2 threads=2"
err=$(mktemp)
trap 'rm -f "$err"' EXIT
{
    echo "# torch $version, $(date -u +%Y-%m-%d), command: bash scripts/partial_fc_torch.sh" \
        "(python $python, $(nproc) CPUs, $rounds rounds; each \$ command, then its output)"
    # What the process holds before any model: the CUDA build of torch maps its libraries.
    "$python" -c 'import torch
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(f"# peak RSS (VmHWM) after import torch alone: {int(line.split()[1]) >> 10} MiB")'
    for round in $(seq "$rounds"); do
        for classes in 10000 100000 1000000; do
            for rate in 1.0 0.1; do
                args="$common classes=$classes sample_rate=$rate"
                echo "\$ python3 scripts/bench_torch.py $args   # round $round, load $(cut -d' ' -f1 /proc/loadavg)"
                status=0
                # shellcheck disable=SC2086
                timeout "$limit" "$python" scripts/bench_torch.py $args 2>"$err" || status=$?
                if [ "$status" -ne 0 ]; then
                    echo "# failed: exit status $status (124: over ${limit} s; 137: killed," \
                        "e.g. out of memory); stderr ends: $(tail -c 300 "$err" | tr '\n' ' ')"
                fi
            done
        done
    done
} >"$out"
# The table: fastest step over the rounds, and the peak RSS (max over the rounds).
python3 - "$out" >>"$out" <<'EOF'
import json
import sys

rows, failed, key = {}, {}, None
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("$ "):
        words = dict(w.split("=", 1) for w in line.split("#")[0].split() if "=" in w)
        key = (int(words["classes"]), float(words["sample_rate"]))
        rows.setdefault(key, [])
    elif line.startswith("{"):
        rows[key].append(json.loads(line))
    elif line.startswith("# failed"):
        failed[key] = failed.get(key, 0) + 1
print("# summary: classes sample_rate min_step_seconds peak_memory_MiB (rounds measured)")
for (classes, rate), runs in sorted(rows.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
    fails = f", {failed[(classes, rate)]} failed" if (classes, rate) in failed else ""
    if not runs:
        print(f"# {classes:>8} {rate:>4} {'-':>8} {'-':>8} (0{fails})")
        continue
    step = min(r["step_seconds"] for r in runs)
    peak = max(r["peak_memory_bytes"] for r in runs) / 2**20
    print(f"# {classes:>8} {rate:>4} {step:8.3f} {peak:8.0f} ({len(runs)}{fails})")
EOF
cat "$out"
