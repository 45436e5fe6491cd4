#!/usr/bin/env bash
# One prepared run of every CUDA path and GPU target, for the rare session that is lent a GPU (under 8 min on
# an H100/H200). Prints the numbers; copy them into benchmarks/README.md.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine (WORKBENCH_DATA: MNIST in torchvision layout)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh   # dry run of the same commands at toy sizes (checks the script)
#
# Parts, each under its own time limit so one slow part cannot eat the others' time:
#   1. training with bf16, compile and channels-last (train_throughput.py), and the wide-resnet step's share of
#      the measured bf16 matmul rate (target >= 40% at batch 512);
#   2. PGD throughput against torchattacks, with the bf16 / channels-last / compile variants (attack_throughput.py);
#   3. AutoAttack and each member against torchattacks (autoattack_throughput.py).
# MNIST parts need WORKBENCH_DATA (default ../shared/data); the quickstart part needs no data.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
export WORKBENCH_DATA="${WORKBENCH_DATA:-$(cd .. && pwd)/shared/data}"
if [ -n "${QUICK:-}" ]; then  # toy sizes: only that every command runs
    TRAIN=(--epochs 2 --batch 32 --subset 128 --resnet-subset 32 --mfu-batch 8 --resnet resnet56)
    ATTACK=(--n 64 --batch-size 64 --steps 5 --repeats 1)
    AA=(--n 32 --scale 0.02 --models quickstart,robust)
    LIMIT=300
else
    TRAIN=(--epochs 3 --batch 512 --subset 8192 --resnet-subset 2048 --mfu-batch 512 --resnet wrn34_10)
    ATTACK=(--n 10000 --batch-size 5000 --repeats 3)
    AA=(--n 1000 --floor)
    LIMIT=150
fi
python - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
status=0
part() {  # part NAME COMMAND...: run under the time limit, report its exit status and seconds
    local name=$1; shift
    echo; echo "== $name"
    local t0=$SECONDS
    timeout "$LIMIT" "$@"; local rc=$?
    echo "== $name: exit $rc, $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || status=1
}
part "training: bf16 / compile / channels-last, MFU" \
    python benchmarks/train_throughput.py --device "$DEVICE" "${TRAIN[@]}" \
        --workloads mnist-clean,mnist-pgd10,cifar-pgd10 --variants baseline,amp,channels_last,compile,all --mfu
part "PGD vs torchattacks (+ bf16, channels-last, compile)" \
    python benchmarks/attack_throughput.py --device "$DEVICE" "${ATTACK[@]}" --models robust,plain \
        --variants bf16,channels-last,compile
part "AutoAttack and members vs torchattacks" \
    python benchmarks/autoattack_throughput.py --device "$DEVICE" "${AA[@]}"
exit $status
