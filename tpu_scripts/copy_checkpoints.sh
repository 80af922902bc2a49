#!/usr/bin/env bash
# Copies a run's checkpoints (and config, logs) from its workdir to a local folder.
#   gs:// workdirs are synced with `gcloud storage rsync`; a workdir on the VM
#   is copied from worker 0 with `tpu-vm scp`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  echo "usage: copy_checkpoints.sh --name NAME --zone ZONE [--project P] --workdir (gs://B/RUN | PATH_ON_VM) --dest DIR [--dry-run]"
}

WORKDIR=""
DEST=""
parse_common_flags "$@"
set -- "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workdir) WORKDIR="${2:?--workdir needs a value}"; shift 2 ;;
    --dest) DEST="${2:?--dest needs a value}"; shift 2 ;;
    *) die_usage "unknown argument $1" ;;
  esac
done
[[ -n "$WORKDIR" ]] || die_usage "--workdir is required"
[[ -n "$DEST" ]] || die_usage "--dest is required"

if [[ "$WORKDIR" == gs://* ]]; then
  run gcloud storage rsync --recursive "$WORKDIR" "$DEST"
else
  mapfile -t location < <(gcloud_location)
  run mkdir -p "$DEST"
  run gcloud compute tpus tpu-vm scp --recurse "$NAME:$WORKDIR" "$DEST" "${location[@]}" --worker=0
fi
