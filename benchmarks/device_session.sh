#!/usr/bin/env bash
# The measurements behind BENCHMARKS.md, as run on a lent GPU machine (MLX's CUDA backend), from the repo root:
#   bash benchmarks/device_session.sh PHASE      (PHASE: s5a | s5b | s4a | s4b | s4c | coldstart | cold-before | check | parity | final1 | matrix | final2 | ports | profile | variants | ab
#                                                | prefetch | variants2 | route3 | staged | final3 | kernels | profile4 | kernels2 | kernels3 | kernels4 | final5 | final6 | route7 | check3 | graphs2 | matrix2 | final4)
# Expects mlx (+ mlx-cuda) installed, and for the reference comparison a WiLoR-mini checkout and the
# smplx/roma wheels under .refbench/ (git-ignored; see BENCHMARKS.md). Results go to $OUT (default out/).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
REF=.refbench/WiLoR-mini
PORT=.refbench/wilor-mlx
phase=${1:?phase}
log="$OUT/log_${phase}.txt"
run() { echo "+ $*" | tee -a "$log"; "$@" 2>&1 | tee -a "$log"; }

wheels() {  # the packages the device image lacks (smplx, roma for the reference; the server's), carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .refbench/whl/*.whl && export PYTHONPATH=/tmp/site
}

case "$phase" in
  s5a)
    # fifth session (H200, 2026-12-03): which kernels the switch to the compiled forward compiles itself (the
    # 3.85 s stall of s4a), where a tracked frame's time goes (stages), the route's stages and GPU kernels
    run timeout 200 $PY benchmarks/first_result.py --cache-root /tmp/fresh --ab-iters 10 --json "$OUT/first.json"
    run timeout 150 $PY benchmarks/tracking.py speed --size full --precision bfloat16 --frames 300 --warmup 30 \
      --json "$OUT/tracking_speed.json"
    run timeout 150 $PY benchmarks/profile_route.py -p bfloat16 --hands 2
    ;;
  s5b)
    # fifth session, after the warm-up traces float32 crops too: the switch on an empty cache (no kernel compiled
    # by the switching frame), GPU parity (TF32 off), then annotate and the service on that warm cache (compiled
    # from their first call; s4c's ran uncompiled)
    run timeout 200 $PY benchmarks/first_result.py --cache-root /tmp/fresh --ab-iters 10 --json "$OUT/first.json"
    run env MLX_ENABLE_TF32=0 timeout 200 $PY -m pytest -q -x tests/test_models.py tests/test_kernels.py \
      tests/test_transfer.py tests/test_kernel_cache.py
    wheels
    run env MLX_HANDS_CACHE=/tmp/fresh timeout 100 $PY benchmarks/annotate_throughput.py --model full --dtype bfloat16 \
      --engines local --batch-size 16 --num-photos 64 --video-frames 120 --max-det 2 --json "$OUT/annotate.json"
    run env MLX_HANDS_CACHE=/tmp/fresh timeout 100 $PY benchmarks/serve_load.py --synthetic full --dtype bfloat16 \
      --streams 8 --predict 4 --seconds 40 --json "$OUT/serve_load.json"
    ;;
  s4a)
    # fourth session, final (H200, 2026-12-02): a first result on an empty kernel cache (the stall after the switch
    # to the compiled forward), then GPU parity of the whole model file and the kernels, TF32 off
    run timeout 230 $PY benchmarks/first_result.py --cache-root /tmp/fresh --ab-iters 10 --json "$OUT/first.json"
    run env MLX_ENABLE_TF32=0 timeout 280 $PY -m pytest -q -x tests/test_models.py tests/test_kernels.py tests/test_transfer.py
    ;;
  s4b)
    # the model stage beside WiLoR-mini (eager, torch.compile reduce-overhead), then the route with 1, 2, 4 hands
    wheels
    run timeout 400 $PY benchmarks/side_by_side.py --reference "$REF" -b 1 8 64 -p bfloat16 --torch-modes eager compile \
      --iters 40 --max-seconds 6 --json "$OUT/side_by_side.json"
    run timeout 150 $PY -m mlx_hands bench --stage route --hands 1 2 4 -p bfloat16 --iters 60 --max-seconds 8 \
      --json "$OUT/route.json"
    ;;
  s4c)
    # tracking on a 1280x720 video with 2 hands, annotate throughput (local engine), the service under load
    wheels
    run timeout 200 $PY benchmarks/tracking.py speed --size full --precision bfloat16 --frames 300 --warmup 30 \
      --json "$OUT/tracking_speed.json"
    run timeout 200 $PY benchmarks/annotate_throughput.py --model full --dtype bfloat16 --engines local --batch-size 16 \
      --num-photos 64 --video-frames 120 --max-det 2 --json "$OUT/annotate.json"
    run timeout 150 $PY benchmarks/serve_load.py --synthetic full --dtype bfloat16 --streams 8 --predict 4 --seconds 40 \
      --json "$OUT/serve_load.json"
    ;;
  coldstart)
    # fourth session (H200, 2026-12-02): where a cold start goes (before), a first run as a user meets it (after),
    # GPU parity of the kernels, then WiLoR-mini side by side (eager and torch.compile reduce-overhead)
    run timeout 200 $PY benchmarks/first_result.py --cache-root /tmp/fresh --ab-iters 15 --json "$OUT/first.json"
    run env MLX_ENABLE_TF32=0 timeout 300 $PY -m pytest -q tests/test_models.py tests/test_kernels.py tests/test_transfer.py
    run timeout 500 $PY benchmarks/side_by_side.py --reference "$REF" -b 1 8 64 -p bfloat16 --torch-modes eager compile \
      --json "$OUT/side_by_side.json"
    ;;
  cold-before)
    run timeout 500 $PY benchmarks/cold_start.py --cache /tmp/ptx-cold --json "$OUT/cold.json"
    ;;
  check)
    run nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    run $PY -c "import mlx.core as mx; print(mx.__version__, mx.default_device(), mx.device_info())"
    run timeout 240 $PY -m pytest -q -x tests/test_models.py tests/test_bench.py
    ;;
  parity)
    # fp32 parity against the reference's golden tensors, on the GPU (compiled forward, fused kernels)
    run timeout 240 $PY -m pytest -q -x -k "reference or float_crops or channel" --durations=5 tests/test_models.py
    ;;
  final1)
    bash "$0" parity
    run timeout 200 $PY benchmarks/ab.py -p bfloat16 -b 1 64 --iters 30 --max-seconds 3 --json "$OUT/ab_bf16.json"
    run timeout 80 $PY benchmarks/ab.py -p float32 -b 1 -v default "no fused add+norm" --iters 20 --max-seconds 3 \
      --json "$OUT/ab_fp32.json"
    for v in "MLX_USE_CUDA_GRAPHS=0" "MLX_MAX_OPS_PER_BUFFER=1000"; do
      echo "== $v" | tee -a "$log"
      run env $v timeout 80 $PY -m mlx_hands bench -b 1 64 -p bfloat16 --iters 30 --max-seconds 3
    done
    ;;
  final2)
    bash "$0" ports
    run timeout 150 $PY benchmarks/profile_model.py -p bfloat16 -b 1 64 --iters 10 --json "$OUT/profile3_bf16.json"
    ;;
  ab)
    run timeout 200 $PY benchmarks/ab.py -p bfloat16 -b 1 64 --iters 30 --max-seconds 3 --json "$OUT/ab_bf16.json"
    run timeout 100 $PY benchmarks/ab.py -p float32 -b 1 -v default "no fused add+norm" --iters 20 --max-seconds 3 \
      --json "$OUT/ab_fp32.json"
    ;;
  profile2)
    run timeout 200 $PY benchmarks/profile_model.py -p bfloat16 -b 1 64 --iters 10 --json "$OUT/profile2_bf16.json"
    ;;
  profile)
    run timeout 200 $PY benchmarks/profile_model.py -p bfloat16 -b 1 32 --iters 10 --json "$OUT/profile_bf16.json"
    run timeout 120 $PY benchmarks/profile_model.py -p bfloat16 -b 1 --eager --iters 5 --json "$OUT/profile_bf16_eager.json"
    run timeout 100 $PY benchmarks/profile_model.py -p float32 -b 1 32 --iters 5 --json "$OUT/profile_fp32.json"
    ;;
  variants)
    for v in "X=1" "MLX_MAX_OPS_PER_BUFFER=1000" "MLX_MAX_OPS_PER_BUFFER=300" "MLX_MAX_OPS_PER_BUFFER=40" "MLX_USE_CUDA_GRAPHS=0"; do
      echo "== $v" | tee -a "$log"
      run env $v timeout 90 $PY -m mlx_hands bench -b 1 32 -p bfloat16 --iters 30 --max-seconds 4
    done
    ;;
  matrix)
    run timeout 560 $PY -m mlx_hands bench --stage all -b 1 8 32 64 -p float32 float16 bfloat16 --hands 1 2 \
      --reference "$REF" --reference-precision float32 float16 bfloat16 --floors --iters 50 --max-seconds 4 \
      --json "$OUT/bench_matrix.json"
    ;;
  ports)
    run timeout 250 $PY benchmarks/seed_port.py --port "$PORT" -b 1 8 32 64 -p float32 float16 bfloat16 --iters 30 \
      --max-seconds 4 --json "$OUT/seed_port.json"
    run timeout 150 $PY -m mlx_hands bench --eager -b 1 32 -p float32 bfloat16 --iters 30 --max-seconds 3 \
      --json "$OUT/bench_eager.json"
    ;;
  prefetch)
    # host->GPU input prefetch A/B and the side-by-side against WiLoR-mini where it was lost (b >= 32)
    run timeout 560 $PY benchmarks/interleaved.py --reference "$REF" -p bfloat16 float16 -b 1 32 64 --rounds 3 \
      --iters 20 --transfer-modes prefetch plain --json "$OUT/interleaved2.json"
    ;;
  variants2)
    # speed per precision variant (issue 5), b = 1 and 16; full route with 2 hands
    run timeout 300 $PY -m mlx_hands bench -b 1 16 -p float32 float16 bfloat16 --iters 30 --max-seconds 3 \
      --json "$OUT/bench_precisions.json"
    run timeout 280 $PY -m mlx_hands bench -b 1 16 -p bfloat16 -q 8 4 --iters 20 --max-seconds 3 \
      --json "$OUT/bench_quantized.json"
    ;;
  route3)
    run timeout 200 $PY -m mlx_hands bench --stage route --hands 1 2 -p bfloat16 float16 --iters 50 --max-seconds 4 \
      --json "$OUT/route3.json"
    run timeout 300 $PY -m pytest -q -x -k "reference or float_crops or channel" --durations=5 tests/test_models.py
    ;;
  staged)
    # staged host->GPU copy (models/transfer.py): exactness + timing, then side by side with WiLoR-mini
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp  # kernel cache of an earlier session, if carried
    run timeout 100 $PY benchmarks/transfer.py -b 64
    run timeout 100 $PY benchmarks/transfer.py -b 8
    run timeout 420 $PY benchmarks/interleaved.py --reference "$REF" -p bfloat16 float16 -b 32 64 --rounds 3 \
      --iters 20 --transfer-modes prefetch --json "$OUT/interleaved3.json"
    ;;
  final3)
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 400 $PY benchmarks/interleaved.py --reference "$REF" -p bfloat16 float16 -b 1 32 64 --rounds 3 \
      --iters 20 --json "$OUT/interleaved4.json"
    run timeout 150 $PY -m mlx_hands bench --stage route --hands 2 -p bfloat16 --iters 50 --max-seconds 4 \
      --json "$OUT/route4.json"
    ;;
  kernels)
    # third session: GELU and sample+max kernels, the add+LayerNorm kernel rewritten, the input window
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 240 $PY -m pytest -q -x tests/test_kernels.py
    run timeout 200 $PY -m pytest -q -x -k "reference or float_crops or channel or window" tests/test_models.py
    run timeout 60 $PY benchmarks/transfer.py -b 64
    run timeout 280 $PY benchmarks/ab.py -p bfloat16 float16 -b 1 64 -v default "no gelu kernel" "no sample_max kernel" \
      "no custom kernels" --iters 30 --max-seconds 3 --json "$OUT/ab_kernels.json"
    tar czf "$OUT/ptx.tgz" -C /tmp mlx
    ;;
  profile4)
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 300 $PY benchmarks/profile_model.py -p bfloat16 float16 -b 1 64 --iters 10 --json "$OUT/profile4.json"
    ;;
  kernels2)
    # outputs through the pinned buffer, detector output too; sample_max with 32 point slices
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 200 $PY -m pytest -q -x tests/test_kernels.py tests/test_transfer.py
    run timeout 60 $PY benchmarks/transfer.py -b 64
    run timeout 200 $PY benchmarks/profile_model.py -p bfloat16 -b 1 64 --iters 10 --json "$OUT/profile5.json"
    run timeout 150 $PY -m mlx_hands bench --stage all -b 1 8 32 64 -p bfloat16 --hands 1 2 --iters 50 \
      --max-seconds 4 --json "$OUT/bench5.json"
    tar czf "$OUT/ptx.tgz" -C /tmp mlx
    ;;
  kernels3)
    # the MANO kernel, selects instead of concatenations in the rotations, the input copy launched async
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 200 $PY -m pytest -q -x tests/test_kernels.py tests/test_transfer.py
    run timeout 200 $PY -m pytest -q -x -k "reference or float_crops or channel or window" tests/test_models.py
    run timeout 200 $PY benchmarks/ab.py -p bfloat16 -b 1 64 -v default "no mano kernel" "no custom kernels" \
      --iters 30 --max-seconds 3 --json "$OUT/ab_mano.json"
    run timeout 150 $PY benchmarks/profile_model.py -p bfloat16 -b 1 64 --iters 10 --json "$OUT/profile6.json"
    tar czf "$OUT/ptx.tgz" -C /tmp mlx
    ;;
  kernels4)
    # rotation kernels, every output in one kernel into the pinned buffer; graph chunk size
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 200 $PY -m pytest -q -x tests/test_kernels.py tests/test_transfer.py
    run timeout 200 $PY -m pytest -q -x -k "reference or float_crops or channel or window" tests/test_models.py
    run timeout 150 $PY benchmarks/ab.py -p bfloat16 -b 1 64 -v default "no rotation kernels" "no custom kernels" \
      --iters 30 --max-seconds 3 --json "$OUT/ab_rot.json"
    run timeout 120 $PY benchmarks/profile_model.py -p bfloat16 -b 1 64 --iters 10 --json "$OUT/profile7.json"
    for v in 25 50 100; do
      echo "== MLX_MAX_OPS_PER_BUFFER=$v" | tee -a "$log"
      run env MLX_MAX_OPS_PER_BUFFER=$v timeout 80 $PY -m mlx_hands bench -b 1 64 -p bfloat16 --iters 40 --max-seconds 3
    done
    tar czf "$OUT/ptx.tgz" -C /tmp mlx
    ;;
  final5)
    # third session, everything in: kernel tests, side by side in alternating rounds, route, route profile
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 150 $PY -m pytest -q tests/test_kernels.py tests/test_transfer.py
    run timeout 300 $PY benchmarks/interleaved.py --reference "$REF" -p bfloat16 float16 float32 -b 1 8 32 64 \
      --rounds 3 --iters 20 --json "$OUT/interleaved6.json"
    run timeout 100 $PY -m mlx_hands bench --stage route --hands 1 2 -p bfloat16 float16 --iters 50 --max-seconds 4 \
      --json "$OUT/route6.json"
    run timeout 100 $PY benchmarks/profile_route.py -p bfloat16 --hands 2
    ;;
  final6)
    # the input copy without a count (whole blocks, a view of the result); the route with and without the
    # pinned-buffer copies
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 150 $PY -m pytest -q tests/test_kernels.py tests/test_transfer.py
    run timeout 60 $PY benchmarks/transfer.py -b 64
    run timeout 120 $PY benchmarks/profile_model.py -p bfloat16 -b 1 64 --iters 10 --json "$OUT/profile8.json"
    for m in staged plain; do
      echo "== MLX_HANDS_TRANSFER=$m" | tee -a "$log"
      run env MLX_HANDS_TRANSFER=$m timeout 100 $PY -m mlx_hands bench --stage all -b 1 64 -p bfloat16 --hands 2 \
        --iters 50 --max-seconds 4 --json "$OUT/bench6_$m.json"
    done
    run timeout 100 $PY benchmarks/profile_route.py -p bfloat16 --hands 2
    ;;
  route7)
    # the planted detector output computed on the device (as a real detector's output is)
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 150 $PY -m mlx_hands bench --stage all -b 1 8 64 -p bfloat16 float16 --hands 1 2 4 --iters 50 \
      --max-seconds 4 --json "$OUT/bench7.json"
    run timeout 100 $PY benchmarks/profile_route.py -p bfloat16 --hands 2
    ;;
  check3)
    # last check of the session: kernels built once, fallbacks on failure; GPU tests and the parity subset
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 200 $PY -m pytest -q tests/test_kernels.py tests/test_transfer.py tests/test_bench.py
    run timeout 200 $PY -m pytest -q -x -k "reference or float_crops or channel or window" tests/test_models.py
    run timeout 100 $PY -m mlx_hands bench -b 1 64 -p bfloat16 --iters 40 --max-seconds 3 --json "$OUT/bench8.json"
    ;;
  graphs2)
    # MLX's CUDA graphs on and off, alternating processes
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    for r in 1 2; do
      for v in 1 0; do
        echo "== round $r MLX_USE_CUDA_GRAPHS=$v" | tee -a "$log"
        run env MLX_USE_CUDA_GRAPHS=$v timeout 100 $PY -m mlx_hands bench --stage all -b 1 8 64 -p bfloat16 --hands 2 \
          --iters 40 --max-seconds 3 --json "$OUT/graphs_${v}_$r.json"
      done
    done
    ;;
  matrix2)
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 560 $PY -m mlx_hands bench --stage all -b 1 8 32 64 -p float32 float16 bfloat16 --hands 1 2 \
      --reference "$REF" --reference-precision float32 float16 bfloat16 --floors --iters 50 --max-seconds 4 \
      --json "$OUT/bench_matrix2.json"
    ;;
  final4)
    [ -f .ptx/ptx.tgz ] && tar xzf .ptx/ptx.tgz -C /tmp
    run timeout 450 $PY benchmarks/interleaved.py --reference "$REF" -p bfloat16 float16 -b 1 32 64 --rounds 3 \
      --iters 20 --json "$OUT/interleaved5.json"
    run timeout 120 $PY -m mlx_hands bench --stage route --hands 2 -p bfloat16 float16 --iters 50 --max-seconds 4 \
      --json "$OUT/route5.json"
    ;;
  *) echo "unknown phase $phase"; exit 2 ;;
esac
