#!/usr/bin/env bash
# Installs jaxgen (with JAX for TPU) on every worker of a TPU VM slice.
#   --source DIR   a local jaxgen git checkout: its HEAD is archived here and copied over
#   --git URL      or pip-install straight from a git URL on each worker
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: install.sh --name NAME --zone ZONE [--project P] (--source DIR | --git URL) [--dry-run]
USAGE
}

SOURCE=""
GIT_URL=""
parse_common_flags "$@"
set -- "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --source) SOURCE="${2:?--source needs a value}"; shift 2 ;;
    --git) GIT_URL="${2:?--git needs a value}"; shift 2 ;;
    *) die_usage "unknown argument $1" ;;
  esac
done
[[ -n "$SOURCE" || -n "$GIT_URL" ]] || die_usage "give --source DIR or --git URL"
[[ -z "$SOURCE" || -z "$GIT_URL" ]] || die_usage "give only one of --source and --git"

JAX_TPU="pip install -U 'jax[tpu]<0.11' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
if [[ -n "$SOURCE" ]]; then
  [[ -f "$SOURCE/pyproject.toml" ]] || die_usage "--source $SOURCE has no pyproject.toml"
  ARCHIVE="${TMPDIR:-/tmp}/jaxgen-src.tar.gz"
  # The committed tree (HEAD) is what gets installed: uncommitted edits stay here.
  run git -C "$SOURCE" archive --format=tar.gz --prefix=jaxgen/ -o "$ARCHIVE" HEAD
  mapfile -t location < <(gcloud_location)
  run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:jaxgen-src.tar.gz" "${location[@]}" \
    --worker=all
  on_workers all "$JAX_TPU && pip install ./jaxgen-src.tar.gz"
else
  on_workers all "$JAX_TPU && pip install 'jaxgen @ git+$GIT_URL'"
fi
