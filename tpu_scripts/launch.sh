#!/usr/bin/env bash
# Starts `jaxgen train` on every worker at once. On a TPU slice each worker
# joins the run with --distributed (JAX finds the coordinator itself); logs go
# to ~/jaxgen_train.log on each worker. Use a gs:// workdir so every worker
# writes the same checkpoints.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: launch.sh --name NAME --zone ZONE [--project P] --config CONFIG --workdir gs://BUCKET/RUN
                 [--dry-run] [-- key=value ...]
USAGE
}

CONFIG=""
WORKDIR=""
OVERRIDES=()
parse_common_flags "$@"
set -- "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) CONFIG="${2:?--config needs a value}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a value}"; shift 2 ;;
    --) shift; OVERRIDES+=("$@"); break ;;
    *) die_usage "unknown argument $1" ;;
  esac
done
[[ -n "$CONFIG" ]] || die_usage "--config is required"
[[ -n "$WORKDIR" ]] || die_usage "--workdir is required"
[[ "$WORKDIR" == gs://* ]] || echo "warning: --workdir $WORKDIR is not gs://; each worker" \
  "writes its own local copy and multi-host checkpoints need one shared path" >&2

train="jaxgen train --distributed --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")"
for o in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do
  train+=" $(printf '%q' "$o")"
done
# Let FSDP's parameter all-gathers and gradient reduce-scatters run
# asynchronously, fused and overlapped with compute (the flags MaxText sets for
# TPU v4/v5; the latency-hiding scheduler is on by default on TPU). Unmeasured
# by jaxgen's tests (CPU only). JAXGEN_LIBTPU_INIT_ARGS replaces them.
overlap_flags="--xla_tpu_enable_data_parallel_all_reduce_opt=true"
overlap_flags+=" --xla_tpu_data_parallel_opt_different_sized_ops=true"
overlap_flags+=" --xla_tpu_enable_async_collective_fusion=true"
overlap_flags+=" --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true"
overlap_flags+=" --xla_tpu_enable_async_collective_fusion_multiple_steps=true"
overlap_flags+=" --xla_tpu_overlap_compute_collective_tc=true"
overlap_flags+=" --xla_enable_async_all_gather=true"
libtpu_args="${JAXGEN_LIBTPU_INIT_ARGS-$overlap_flags}"
on_workers all "LIBTPU_INIT_ARGS=$(printf '%q' "$libtpu_args") nohup $train > ~/jaxgen_train.log 2>&1 &"
