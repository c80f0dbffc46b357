#!/bin/bash
# First-boot bootstrap of an mlops-platform host, run by cloud-init's runcmd (infra/hostboot
# renders the call): the virtualenv with the pinned packages, the boot step (secrets into
# root-only env files, databases), then the services. Idempotent: safe to rerun by hand.
set -euo pipefail

if (($# < 6)); then
  echo "usage: $0 VENV REQUIREMENTS CONSTRAINTS BOOT_SCRIPT BOOT_CONFIG UNIT..." >&2
  exit 2
fi
venv=$1
requirements=$2
constraints=$3
boot_script=$4
boot_config=$5
shift 5

log() { printf 'mlops-bootstrap: %s\n' "$*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating the virtualenv $venv"
  python3.11 -m venv "$venv"
fi
log "installing the pinned packages from $requirements"
"$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check \
  --requirement "$requirements" --constraint "$constraints"

log "fetching secrets into env files and creating databases"
"$venv/bin/python" "$boot_script" "$boot_config"

systemctl daemon-reload
systemctl enable --now "$@"
log "started $*"
