#!/usr/bin/env bash
# Creates a TPU VM slice, directly or as a queued resource (waits for capacity).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: create.sh --name NAME --zone ZONE [--project P] [--accelerator-type v4-32]
                 [--version tpu-ubuntu2204-base] [--spot] [--queued] [--dry-run]
USAGE
}

ACCELERATOR="v4-8"
VERSION="tpu-ubuntu2204-base"
SPOT=0
QUEUED=0
parse_common_flags "$@"
set -- "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --accelerator-type) ACCELERATOR="${2:?--accelerator-type needs a value}"; shift 2 ;;
    --version) VERSION="${2:?--version needs a value}"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    *) die_usage "unknown argument $1" ;;
  esac
done

mapfile -t location < <(gcloud_location)
if [[ "$QUEUED" == 1 ]]; then
  flags=(--node-id="$NAME" --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION")
  [[ "$SPOT" == 1 ]] && flags+=(--spot)
  run gcloud compute tpus queued-resources create "$NAME" "${location[@]}" "${flags[@]}"
else
  flags=(--accelerator-type="$ACCELERATOR" --version="$VERSION")
  [[ "$SPOT" == 1 ]] && flags+=(--spot)
  run gcloud compute tpus tpu-vm create "$NAME" "${location[@]}" "${flags[@]}"
fi
