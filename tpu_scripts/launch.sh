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
on_workers all "nohup $train > ~/jaxgen_train.log 2>&1 &"
