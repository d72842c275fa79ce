#!/usr/bin/env bash
# System packages some tests use (Debian/Ubuntu): headless Chromium for the report/dashboard
# browser tests, PostgreSQL for the cluster-style storage test. Skipped when present or when
# apt-get is unavailable (those tests then fail with a message naming the missing tool).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v pg_ctlcluster >/dev/null 2>&1 || [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "system-deps: installing ${need[*]}" >&2
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "system-deps: apt-get not found; install ${need[*]} yourself" >&2
  fi
fi
