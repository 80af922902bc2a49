# Shared flag parsing and command runner for the jaxgen TPU scripts.
# Sourced by the scripts, never run on its own.
#
# Every script accepts:
#   --name NAME            TPU VM (or queued resource) name          [$JAXGEN_TPU_NAME]
#   --zone ZONE            e.g. us-central2-b                         [$JAXGEN_TPU_ZONE]
#   --project PROJECT      GCP project (default: gcloud's)            [$JAXGEN_TPU_PROJECT]
#   --dry-run              print the gcloud commands instead of running them
#   -h | --help            usage

NAME="${JAXGEN_TPU_NAME:-}"
ZONE="${JAXGEN_TPU_ZONE:-}"
PROJECT="${JAXGEN_TPU_PROJECT:-}"
DRY_RUN=0
EXTRA_ARGS=()

die_usage() {
  echo "error: $1" >&2
  usage >&2
  exit 2
}

# Parses the common flags; anything else is left in EXTRA_ARGS for the script.
parse_common_flags() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) NAME="${2:?--name needs a value}"; shift 2 ;;
      --zone) ZONE="${2:?--zone needs a value}"; shift 2 ;;
      --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) EXTRA_ARGS+=("$1"); shift ;;
    esac
  done
  [[ -n "$NAME" ]] || die_usage "--name is required (or set JAXGEN_TPU_NAME)"
  [[ -n "$ZONE" ]] || die_usage "--zone is required (or set JAXGEN_TPU_ZONE)"
}

# Flags every gcloud TPU command takes.
gcloud_location() {
  local flags=(--zone="$ZONE")
  [[ -n "$PROJECT" ]] && flags+=(--project="$PROJECT")
  printf '%s\n' "${flags[@]}"
}

# Prints (dry run) or runs one command, quoted so it can be pasted back.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# Runs a shell command on TPU workers over ssh (all of them by default).
on_workers() {
  local worker="$1" command="$2"
  local location
  mapfile -t location < <(gcloud_location)
  run gcloud compute tpus tpu-vm ssh "$NAME" "${location[@]}" --worker="$worker" \
    --command="$command"
}
