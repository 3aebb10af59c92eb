#!/usr/bin/env bash
# Re-runs the book's training demonstrations and writes what they print, as printed, to
# assets/book_*.txt and assets/dashboard.txt, which the book includes. Every command is shown
# as the book shows it (`cargo run --release --bin NAME -- ...`) and run from the same release
# build. Where a line of output is left out, the file says `...` in its place: the Learner's
# configuration dump and the model tree in its summary.
#
#   bash scripts/book_runs.sh             # every part, about 10 minutes on 2 cores
#   bash scripts/book_runs.sh resume nan  # some: help progress pictures val precision data sheet disk
#                                         # broken dashboard resume nan recipe repeat eval
#                                         # grid replicas interop replica_tests hosts export
#                                         # pth ijb
#
# `hosts` needs root and iproute2 (two network namespaces); `export` and `pth` need python3
# with torch and safetensors.
#
# The paths are the book's (/tmp/faces, runs/book-*); each part deletes what it writes first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/groupface-target}"
cargo build --release --quiet --bins
bin="$CARGO_TARGET_DIR/release"
parts="${*:-help progress pictures val precision data sheet disk broken dashboard resume nan recipe repeat eval grid replicas interop replica_tests hosts export pth ijb}"
want() { [[ " $parts " == *" $1 "* ]]; }
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"

# `$ cargo run --release --bin NAME -- ARGS` as the book shows it, then the binary's output.
# (The awk below keeps the one line per epoch that train prints when stdout is not a terminal.)
show() {
    local name=$1
    shift
    echo "\$ cargo run --release --bin $name -- $*"
}
# Keeps what a reader needs of a plain-text training run: the lines before the Learner starts
# (`resume: ...`), burn-train's summary table, the report, and any error; `...` for the rest.
summary() {
    awk '
        /^Total Epochs/ { table = 1 }
        table || /^(resume|error|held-out|group-aware|training [0-9]|epoch [0-9])/ { print; gap = 0; next }
        !gap { print "..."; gap = 1 }
    '
}
# `$ cargo test --release ARGS`, then the lines of its output that match PATTERN.
tests() {
    local pattern=$1
    shift
    echo "\$ cargo test --release $*"
    cargo test --release "$@" 2>&1 | grep -E "$pattern"
}
run() {
    local name=$1
    shift
    show "$name" "$@"
    local status=0
    "$bin/$name" "$@" 2>&1 | summary || status=$?
    return "$status"
}

if want help; then
    # Every binary's --help: the first three lines of each, then two pages whole.
    {
        for name in train eval embed ablation bench summary data; do
            show "$name" --help "| head -3"
            "$bin/$name" --help | head -3
            echo
        done
    } >assets/help_heads.txt
    { show ablation --help; "$bin/ablation" --help; } >assets/help_ablation.txt
    { show data --help; "$bin/data" --help; } >assets/help_data.txt
    {
        show train grups=8
        "$bin/train" grups=8 2>&1 || echo "(exit $?)"
        show train mode=sotf
        "$bin/train" mode=sotf 2>&1 || echo "(exit $?)"
    } >assets/help_errors.txt
    echo "assets/help_*.txt ($commit)"
fi

if want progress; then
    # indicatif's bar draws on a terminal only: data synth in a 100x6 tmux terminal, captured
    # 4 s in.
    rm -rf /tmp/book-progress
    tmux kill-session -t book-progress 2>/dev/null || true
    tmux new-session -d -s book-progress -x 100 -y 6 \
        "$bin/data synth out=/tmp/book-progress identities=2000 images_per_identity=20 side=112 seed=0; sleep 600"
    sleep 4
    {
        show data synth out=/tmp/book-progress identities=2000 images_per_identity=20 side=112 seed=0
        tmux capture-pane -p -t book-progress | sed -e '/^$/d'
    } >assets/progress.txt
    tmux kill-session -t book-progress
    rm -rf /tmp/book-progress
    echo "assets/progress.txt ($commit)"
fi

if want pictures; then
    # One run's pictures for the training chapter, and its one line per epoch (stdout is a
    # pipe here, so train prints lines, not the dashboard).
    rm -rf runs/book-pictures
    run train backbone=tiny groups=8 epochs=6 out=runs/book-pictures >assets/book_pictures.txt
    for picture in curves.svg group_shares.svg roc.svg; do
        cp "runs/book-pictures/$picture" "book/src/images/run_$picture"
    done
    echo "assets/book_pictures.txt book/src/images/run_*.svg ($commit)"
fi

if want val; then
    # Two validation targets written by Python's pickle from synthetic faces the run never
    # trains on (other seeds), measured at each epoch's end and every 2 steps.
    rm -rf /tmp/book-val runs/book-val
    {
        for set in lfw cfp_fp; do
            seed=$([ "$set" = lfw ] && echo 101 || echo 102)
            show data synth out=/tmp/book-val/$set identities=50 images_per_identity=4 side=32 seed=$seed
            "$bin/data" synth out=/tmp/book-val/$set identities=50 images_per_identity=4 side=32 seed=$seed
            echo "\$ python3 scripts/make_val_bin.py src=/tmp/book-val/$set out=/tmp/book-val/$set.bin pairs=600"
            python3 scripts/make_val_bin.py src=/tmp/book-val/$set out=/tmp/book-val/$set.bin pairs=600
        done
        run train val=/tmp/book-val/lfw.bin,/tmp/book-val/cfp_fp.bin val_every=2 epochs=3 \
            out=runs/book-val
        echo "\$ cat runs/book-val/val_targets.csv"
        cat runs/book-val/val_targets.csv
        echo "\$ cut -d, -f1,2,13- runs/book-val/metrics.csv"
        cut -d, -f1,2,13- runs/book-val/metrics.csv
    } >assets/book_val.txt
    echo "assets/book_val.txt ($commit)"
fi

if want precision; then
    # Mixed precision on the CPU: the step's time in each precision (flex has bf16 and f16,
    # ndarray refuses them), then the default job for 3 epochs in each.
    rm -rf runs/book-precision-*
    {
        for precision in f32 bf16 f16 bf16-pure; do
            show bench backbone=tiny batch=64 steps=10 warmup=2 precision=$precision
            "$bin/bench" backbone=tiny batch=64 steps=10 warmup=2 precision=$precision 2>/dev/null
        done
        show bench backbone=tiny precision=bf16 backend=ndarray
        "$bin/bench" backbone=tiny precision=bf16 backend=ndarray 2>&1 || echo "(exit status $?)"
        for precision in f32 bf16 f16; do
            run train epochs=3 precision=$precision out=runs/book-precision-$precision
        done
    } >assets/book_precision.txt
    echo "assets/book_precision.txt ($commit)"
fi

if want data; then
    rm -rf /tmp/book-faces /tmp/book-faces.rec /tmp/book-faces.idx
    {
        show data synth out=/tmp/book-faces identities=100 images_per_identity=20 side=112 seed=0
        "$bin/data" synth out=/tmp/book-faces identities=100 images_per_identity=20 side=112 seed=0
        show data pack src=/tmp/book-faces out=/tmp/book-faces.rec
        "$bin/data" pack src=/tmp/book-faces out=/tmp/book-faces.rec
        show data info path=/tmp/book-faces.rec
        "$bin/data" info path=/tmp/book-faces.rec
        show data info path=tests/fixtures/verification_highest.bin
        "$bin/data" info path=tests/fixtures/verification_highest.bin
    } >assets/data_commands.txt
    echo "assets/data_commands.txt ($commit)"
fi

if want sheet; then
    # The data chapter's picture.
    show data sheet out=book/src/images/synthetic_faces.png identities=8 images=8 side=112
    "$bin/data" sheet out=book/src/images/synthetic_faces.png identities=8 images=8 side=112
fi

if want disk; then
    rm -rf /tmp/faces /tmp/faces.rec /tmp/faces.idx runs/book-rec runs/book-folder
    {
        show data synth out=/tmp/faces identities=60 images_per_identity=12 side=32
        "$bin/data" synth out=/tmp/faces identities=60 images_per_identity=12 side=32
        show data pack src=/tmp/faces out=/tmp/faces.rec
        "$bin/data" pack src=/tmp/faces out=/tmp/faces.rec
        run train data=/tmp/faces.rec eval_identities=10 eval_pairs=600 out=runs/book-rec
        echo "\$ cut -d, -f1,2,13 runs/book-rec/metrics.csv"
        cut -d, -f1,2,13 runs/book-rec/metrics.csv
        run train data=/tmp/faces eval_identities=10 eval_pairs=600 out=runs/book-folder
    } >assets/book_disk.txt
    echo "assets/book_disk.txt ($commit)"
fi

if want broken; then
    [ -d /tmp/faces ] || "$bin/data" synth out=/tmp/faces identities=60 images_per_identity=12 side=32 >/dev/null
    rm -rf /tmp/faces-broken runs/book-broken
    cp -r /tmp/faces /tmp/faces-broken
    {
        echo "\$ echo \"not an image\" > /tmp/faces-broken/00007/004.png   # in a copy of /tmp/faces"
        echo "not an image" >/tmp/faces-broken/00007/004.png
        status=0
        run train data=/tmp/faces-broken eval_identities=10 eval_pairs=600 out=runs/book-broken ||
            status=$?
        echo "\$ echo \$?"
        echo "$status"
        echo "\$ cp /tmp/faces/00007/004.png /tmp/faces-broken/00007/004.png"
        cp /tmp/faces/00007/004.png /tmp/faces-broken/00007/004.png
        run train data=/tmp/faces-broken eval_identities=10 eval_pairs=600 out=runs/book-broken
    } >assets/book_broken.txt
    echo "assets/book_broken.txt ($commit)"
fi

if want dashboard; then
    # Burn's TUI in a 150x46 tmux terminal, captured 6 s into the last of 3 epochs.
    rm -rf /tmp/dash
    tmux kill-session -t book-dash 2>/dev/null || true
    tmux new-session -d -s book-dash -x 150 -y 46 \
        "$bin/train backbone=tiny groups=8 epochs=3 out=/tmp/dash; sleep 600"
    until [ -e /tmp/dash/checkpoint/labels-2.json ]; do sleep 0.5; done
    sleep 6
    tmux capture-pane -p -t book-dash >assets/dashboard.txt
    tmux kill-session -t book-dash
    echo "assets/dashboard.txt ($commit)"
fi

if want resume; then
    rm -rf runs/book-resume /tmp/book-whole
    {
        # Killed with SIGKILL once epoch 1's checkpoint is complete (its label window is the
        # last file written).
        "$bin/train" out=runs/book-resume epochs=3 >/dev/null 2>&1 &
        pid=$!
        until [ -e runs/book-resume/checkpoint/labels-1.json ]; do sleep 0.1; done
        kill -9 "$pid"
        status=0
        wait "$pid" || status=$?
        echo "\$ cargo run --release --bin train -- out=runs/book-resume epochs=3   # killed: exit $status"
        echo "\$ ls runs/book-resume/checkpoint"
        ls runs/book-resume/checkpoint
        run train out=runs/book-resume epochs=3 || true
        run train out=runs/book-resume resume=true
        run train out=/tmp/book-whole epochs=3
        echo "\$ python3 scripts/same_tensors.py runs/book-resume/model.safetensors /tmp/book-whole/model.safetensors"
        python3 scripts/same_tensors.py runs/book-resume/model.safetensors /tmp/book-whole/model.safetensors
    } >assets/book_resume.txt
    echo "assets/book_resume.txt ($commit)"
fi

if want nan; then
    rm -rf runs/book-nan
    run train out=runs/book-nan epochs=3 schedule=step step_epochs=1 step_factor=1e30 \
        >assets/book_nan.txt || true
    echo "assets/book_nan.txt ($commit)"
fi

if want recipe; then
    # The paper's two stages at the tiny preset: the baseline, then GroupFace from it.
    rm -rf runs/pretrain runs/groupface
    {
        run train groups=0 out=runs/pretrain
        run train groups=32 init=runs/pretrain lr=0.005 out=runs/groupface
    } >assets/book_recipe.txt
    echo "assets/book_recipe.txt ($commit)"
fi

if want repeat; then
    # A run repeated from its saved configuration ends with the same report.
    rm -rf runs/book-repeat
    [ -e runs/groupface/config.json ] || "$bin/train" groups=32 init=runs/pretrain lr=0.005 \
        out=runs/groupface >/dev/null 2>&1
    {
        run train config=runs/groupface/config.json out=runs/book-repeat
        echo "\$ cmp runs/groupface/report.json runs/book-repeat/report.json && echo same report"
        cmp runs/groupface/report.json runs/book-repeat/report.json && echo same report
    } >assets/book_repeat.txt
    echo "assets/book_repeat.txt ($commit)"
fi

if want eval; then
    # The recipe's GroupFace run evaluated three ways: its own held-out identities, a folder
    # of other synthetic identities (every pair), and its exported safetensors as a
    # checkpoint of another tool would be (init=, the model's shape given by keys).
    [ -e runs/groupface/model.safetensors ] || bash "$0" recipe >/dev/null
    rm -rf /tmp/book-eval /tmp/book-eval-folder /tmp/book-eval-init /tmp/book-eval-faces
    "$bin/data" synth out=/tmp/book-eval-faces identities=20 images_per_identity=6 side=32 \
        seed=7 >/dev/null
    {
        show eval model=runs/groupface data=synthetic out=/tmp/book-eval
        "$bin/eval" model=runs/groupface data=synthetic out=/tmp/book-eval 2>&1
        echo "\$ cargo run --release --bin data -- synth out=/tmp/book-eval-faces identities=20 images_per_identity=6 side=32 seed=7"
        show eval model=runs/groupface data=/tmp/book-eval-faces out=/tmp/book-eval-folder
        "$bin/eval" model=runs/groupface data=/tmp/book-eval-faces out=/tmp/book-eval-folder 2>&1
        show eval init=runs/groupface/model.safetensors backbone=tiny groups=32 \
            data=/tmp/book-eval-faces out=/tmp/book-eval-init
        "$bin/eval" init=runs/groupface/model.safetensors backbone=tiny groups=32 \
            data=/tmp/book-eval-faces out=/tmp/book-eval-init 2>&1
    } >assets/book_eval.txt
    echo "assets/book_eval.txt ($commit)"
fi

if want grid; then
    {
        echo "\$ cargo run --release --bin ablation -- groups=4..32 mode=soft,hard --dry-run"
        "$bin/ablation" groups=4..32 mode=soft,hard --dry-run
    } >assets/book_grid.txt
    echo "assets/book_grid.txt ($commit)"
fi

if want replicas; then
    # The same global batch of 64 three ways; wall time and peak memory from GNU time.
    rm -rf /tmp/book/one /tmp/book/devices /tmp/book/rank0 /tmp/book/rank1
    mkdir -p /tmp/book
    timed() {
        local log=$1
        shift
        /usr/bin/time -f "%e s, %M KiB" -o "$log.time" "$@" >"$log" 2>&1
    }
    timed /tmp/book/one.log "$bin/train" out=/tmp/book/one
    timed /tmp/book/devices.log "$bin/train" out=/tmp/book/devices devices=2 batch=32
    timed /tmp/book/rank0.log "$bin/train" out=/tmp/book/rank0 nodes=2 rank=0 \
        master=127.0.0.1:29500 batch=32 &
    timed /tmp/book/rank1.log "$bin/train" out=/tmp/book/rank1 nodes=2 rank=1 \
        master=127.0.0.1:29500 batch=32
    wait
    {
        echo "run | last-epoch training loss | held-out verification | wall time, peak memory"
        for run in one devices rank0 rank1; do
            loss=$(awk -F, '$1 == 3 && $2 == "train" { print $3 }' "/tmp/book/$run/metrics.csv")
            report=$(grep -o 'held-out verification: [^(]*' "/tmp/book/$run.log" | cut -d' ' -f3-)
            echo "$run | $loss | $report | $(cat "/tmp/book/$run.log.time")"
        done
    } >assets/book_replicas.txt
    echo "assets/book_replicas.txt ($commit)"
fi

if want interop; then
    # The parity tests against PyTorch's outputs, with the largest difference of every output.
    tests "max abs diff|^test |test result" --test integration interop:: -- --nocapture --test-threads=1 \
        >assets/book_interop.txt
    echo "assets/book_interop.txt ($commit)"
fi

if want replica_tests; then
    # What the data-parallel tests measure, as they print it.
    {
        tests "largest|ended|^test |test result" --test integration cluster:: -- --nocapture --test-threads=1
        tests "^update|^test |test result" --test integration training::two_replicas -- --nocapture
    } >assets/book_replica_tests.txt
    echo "assets/book_replica_tests.txt ($commit)"
fi

if want hosts; then
    # Two ranks on two hosts: two network namespaces joined by a virtual Ethernet pair, each
    # with its own network stack and address (10.0.0.1 and 10.0.0.2), so rank 1 reaches rank 0
    # over a real interface, not loopback, and rank 0 announces it by the address it saw.
    for ns in gf-host0 gf-host1; do ip netns del "$ns" 2>/dev/null || true; done
    ip netns add gf-host0
    ip netns add gf-host1
    trap 'ip netns del gf-host0 2>/dev/null; ip netns del gf-host1 2>/dev/null' EXIT
    ip link add gf-eth0 type veth peer name gf-eth1
    ip link set gf-eth0 netns gf-host0
    ip link set gf-eth1 netns gf-host1
    ip -n gf-host0 addr add 10.0.0.1/24 dev gf-eth0
    ip -n gf-host1 addr add 10.0.0.2/24 dev gf-eth1
    for i in 0 1; do
        ip -n "gf-host$i" link set "gf-eth$i" up
        ip -n "gf-host$i" link set lo up
    done
    rm -rf runs/book-r0 runs/book-r1
    ip netns exec gf-host0 "$bin/train" nodes=2 rank=0 master=10.0.0.1:29500 batch=32 \
        out=runs/book-r0 >/tmp/book-r0.log 2>&1 &
    ip netns exec gf-host1 "$bin/train" nodes=2 rank=1 master=10.0.0.1:29500 batch=32 \
        out=runs/book-r1 >/tmp/book-r1.log 2>&1
    wait
    {
        echo "# on host 10.0.0.1"
        show train nodes=2 rank=0 master=10.0.0.1:29500 batch=32 out=runs/book-r0
        summary </tmp/book-r0.log
        echo "# on host 10.0.0.2"
        show train nodes=2 rank=1 master=10.0.0.1:29500 batch=32 out=runs/book-r1
        summary </tmp/book-r1.log
        echo "\$ cmp runs/book-r0/model.safetensors runs/book-r1/model.safetensors && echo same"
        cmp runs/book-r0/model.safetensors runs/book-r1/model.safetensors && echo same
    } >assets/book_hosts.txt
    ip netns del gf-host0
    ip netns del gf-host1
    trap - EXIT
    echo "assets/book_hosts.txt ($commit)"
fi

if want export; then
    # What the exporter writes, read back by PyTorch: the interop test exports the fixture
    # models it loaded, and the fixture script compares them with its own weights and outputs.
    {
        shown=$(tests "^wrote|^test |test result" --test integration interop::export_round_trips -- --nocapture)
        echo "$shown"
        for file in $(awk '/^wrote/ { print $2 }' <<<"$shown"); do
            echo "\$ python3 scripts/make_interop_fixture.py --check-export $file"
            python3 scripts/make_interop_fixture.py --check-export "$file"
        done
    } | sed -E 's#/tmp/groupface-interop-[0-9]+/#/tmp/groupface-interop-PID/#g' \
        >assets/book_export.txt
    echo "assets/book_export.txt ($commit)"
fi

if want pth; then
    # init= with a file PyTorch saved in arcface_torch's layout. No pretrained checkpoint can
    # be downloaded here, so scripts/make_pth.py writes an iresnet100 with random weights: the
    # commands and their checks are real, the accuracies are those of an untrained network.
    rm -rf /tmp/book/iresnet100.pth /tmp/book-pth-faces /tmp/book-pth runs/book-pth
    "$bin/data" synth out=/tmp/book-pth-faces identities=5 images_per_identity=4 side=112 \
        seed=7 >/dev/null
    {
        echo "\$ python3 scripts/make_pth.py backbone=r100 out=/tmp/book/iresnet100.pth"
        python3 scripts/make_pth.py backbone=r100 out=/tmp/book/iresnet100.pth
        echo "\$ cargo run --release --bin data -- synth out=/tmp/book-pth-faces identities=5 images_per_identity=4 side=112 seed=7"
        show eval init=/tmp/book/iresnet100.pth backbone=r100 data=/tmp/book-pth-faces \
            out=/tmp/book-pth
        "$bin/eval" init=/tmp/book/iresnet100.pth backbone=r100 data=/tmp/book-pth-faces \
            out=/tmp/book-pth 2>&1
        run train init=/tmp/book/iresnet100.pth backbone=r100 groups=32 identities=4 \
            images_per_identity=4 batch=8 epochs=1 eval_identities=8 eval_images=3 \
            eval_pairs=40 out=runs/book-pth
    } >assets/book_pth.txt
    echo "assets/book_pth.txt ($commit)"
fi

if want ijb; then
    # The IJB-C protocol end to end on a tree in its layout (the benchmark itself is licensed
    # and cannot be fetched here): its crops are discs with five dots, so the figures say the
    # pipeline runs (alignment from the landmarks, template pooling, every template pair), not
    # how good the model is.
    [ -e runs/groupface/model.safetensors ] || bash "$0" recipe >/dev/null
    rm -rf /tmp/book-ijbc /tmp/book-ijbc-eval
    {
        show data fake-ijb out=/tmp/book-ijbc which=c subjects=6 templates=3 media=2 images=2
        "$bin/data" fake-ijb out=/tmp/book-ijbc which=c subjects=6 templates=3 media=2 images=2
        echo "\$ ls /tmp/book-ijbc/meta"
        ls /tmp/book-ijbc/meta
        show eval model=runs/groupface data=ijbc:/tmp/book-ijbc out=/tmp/book-ijbc-eval
        "$bin/eval" model=runs/groupface data=ijbc:/tmp/book-ijbc out=/tmp/book-ijbc-eval 2>&1
    } >assets/book_ijb.txt
    echo "assets/book_ijb.txt ($commit)"
fi
