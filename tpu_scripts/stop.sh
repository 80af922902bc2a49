#!/usr/bin/env bash
# Stops `jaxgen train` on every worker; with --delete also deletes the slice.
# The last checkpoint orbax finished stays in the workdir; the next launch resumes from it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  echo "usage: stop.sh --name NAME --zone ZONE [--project P] [--delete] [--queued] [--dry-run]"
}

DELETE=0
QUEUED=0
parse_common_flags "$@"
set -- "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --delete) DELETE=1; shift ;;
    --queued) QUEUED=1; shift ;;
    *) die_usage "unknown argument $1" ;;
  esac
done

on_workers all "pkill -INT -f 'jaxgen train' || true"
if [[ "$DELETE" == 1 ]]; then
  mapfile -t location < <(gcloud_location)
  if [[ "$QUEUED" == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$NAME" "${location[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${location[@]}" --quiet
  fi
fi
