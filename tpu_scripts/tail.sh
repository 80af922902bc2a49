#!/usr/bin/env bash
# Follows the training log of one worker (process 0 writes the progress bar and metrics).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  echo "usage: tail.sh --name NAME --zone ZONE [--project P] [--worker 0] [--lines 100] [--dry-run]"
}

WORKER=0
LINES=100
parse_common_flags "$@"
set -- "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --worker) WORKER="${2:?--worker needs a value}"; shift 2 ;;
    --lines) LINES="${2:?--lines needs a value}"; shift 2 ;;
    *) die_usage "unknown argument $1" ;;
  esac
done
[[ "$WORKER" =~ ^[0-9]+$ ]] || die_usage "--worker must be a worker index, got $WORKER"
[[ "$LINES" =~ ^[0-9]+$ ]] || die_usage "--lines must be a number, got $LINES"
on_workers "$WORKER" "tail -n $LINES -F ~/jaxgen_train.log"
