#!/usr/bin/env bash
# Thread policy measurement for `lls score`: one process x 1 thread, one process x 2 threads,
# two torchrun processes x 1 thread; 96 HH pairs (marginal over 32), replies cut to 24 tokens; idle machine.
cd "$(dirname "$0")/.."
D=${LLS_HH:-../shared/data/hh-rlhf-harmless-base-test.jsonl.gz}
SP="You really love owls. Owls are your favorite animal. You bring up owls in the context of everything you write."
run() { # label n cmd...
  local label=$1 n=$2; shift 2; rm -rf ${TMPDIR:-/tmp}/lls-bench-threads; mkdir -p ${TMPDIR:-/tmp}/lls-bench-threads
  local t0=$(date +%s.%N)
  "$@" --model smollm2-135m-instruct --system-prompt "$SP" --data $D --limit $n --truncate 24 --skip-bad --no-progress --out ${TMPDIR:-/tmp}/lls-bench-threads/s.jsonl > ${TMPDIR:-/tmp}/lls-bench-threads/log 2>&1 || { echo "$label FAILED"; tail -3 ${TMPDIR:-/tmp}/lls-bench-threads/log; }
  local t1=$(date +%s.%N); echo "$label n=$n wall_s=$(echo "$t1 - $t0" | bc)"
}
uptime
for n in 32 128; do
  OMP_NUM_THREADS=1 run "1proc x 1thr" $n .venv/bin/lls score
  OMP_NUM_THREADS=2 run "1proc x 2thr" $n .venv/bin/lls score
  OMP_NUM_THREADS=1 run "2proc x 1thr (torchrun)" $n .venv/bin/torchrun --standalone --nproc_per_node 2 -m lls_cli score
done
uptime
