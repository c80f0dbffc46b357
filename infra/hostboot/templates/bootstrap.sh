#!/bin/bash
# Bootstrap of an mlops-platform host: the ExecStart of mlops-bootstrap.service, whose
# Environment= lines (rendered by infra/hostboot) say where and what. In order:
#   1. the virtualenv, then pip itself from the user data's hashed pin (never the distro's pip);
#   2. boto3's closure (hashed, from the user data), to read the bucket;
#   3. the host lock and the boot script from the artifact bucket, each kept only if its
#      sha256 is the user data's;
#   4. the host lock: wheels only, every one checked against its hash;
#   5. the boot step: secrets into root-only env files, databases.
# A failed attempt (package index or Secrets Manager unreachable, credentials not there yet...)
# is logged with its step and retried after a pause that doubles up to a cap, for as long as it
# takes: the services (Requires= this unit) start once it succeeded. Success leaves a marker,
# so the unit does nothing on later boots; a host whose bootstrap never completed retries on
# every boot. See the journal: journalctl -u mlops-bootstrap.
set -uo pipefail

# Beside this script: the two hashed pin files and fetch.py (cloud-init wrote them), the host
# lock and boot.py (fetched below).
here=$(dirname "$0")
pip_lock=$here/pip-lock.txt fetch_lock=$here/fetch-lock.txt
fetch_script=$here/fetch.py boot_script=$here/boot.py host_lock=$here/host-lock.txt
venv=${MLOPS_VENV:?} python=${MLOPS_PYTHON:?}
region=${MLOPS_REGION:?} bucket=${MLOPS_BUCKET:?}
host_lock_key=${MLOPS_HOST_LOCK_KEY:?} host_lock_sha256=${MLOPS_HOST_LOCK_SHA256:?}
boot_script_key=${MLOPS_BOOT_SCRIPT_KEY:?} boot_script_sha256=${MLOPS_BOOT_SCRIPT_SHA256:?}
boot_config=${MLOPS_BOOT_CONFIG:?} done_marker=${MLOPS_DONE_MARKER:?}
delay=${MLOPS_RETRY_FIRST_SECONDS:-10} max_delay=${MLOPS_RETRY_MAX_SECONDS:-300}

log() { printf 'mlops-bootstrap: %s\n' "$*" >&2; }

# step DESCRIPTION COMMAND...: run it, and on failure say which step failed and how.
step() {
  local what=$1 status
  shift
  log "$what"
  "$@"
  status=$?
  if ((status != 0)); then
    log "failed (exit $status): $what"
  fi
  return "$status"
}

pip_install() {
  "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    --retries 3 --timeout 30 --require-hashes --only-binary :all: --requirement "$1"
}

make_venv() {
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
}

attempt() {
  step "creating the virtualenv $venv" make_venv &&
    step "installing pip from $pip_lock" pip_install "$pip_lock" &&
    step "installing boto3 from $fetch_lock" pip_install "$fetch_lock" &&
    step "fetching s3://$bucket/$host_lock_key" \
      "$venv/bin/python" "$fetch_script" "$region" "$bucket" "$host_lock_key" \
      "$host_lock_sha256" "$host_lock" &&
    step "installing the host lock $host_lock" pip_install "$host_lock" &&
    step "fetching s3://$bucket/$boot_script_key" \
      "$venv/bin/python" "$fetch_script" "$region" "$bucket" "$boot_script_key" \
      "$boot_script_sha256" "$boot_script" &&
    step "fetching secrets into env files and creating databases" \
      "$venv/bin/python" "$boot_script" "$boot_config"
}

if [[ -e "$done_marker" ]]; then
  log "already bootstrapped ($done_marker exists); nothing to do"
  exit 0
fi
tries=1
until attempt; do
  log "attempt $tries failed; retrying in ${delay}s"
  sleep "$delay"
  delay=$((delay * 2 > max_delay ? max_delay : delay * 2))
  tries=$((tries + 1))
done
mkdir -p "$(dirname "$done_marker")" && touch "$done_marker"
log "bootstrapped after $tries attempt(s)"
