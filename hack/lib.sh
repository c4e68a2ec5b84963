# Shared shell helpers for hack/ scripts. Sourced, never run.
# Caches live outside the work tree so a fresh clone reuses them; override with WAND_CACHE.
WAND_CACHE="${WAND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-wand}"
export WAND_CACHE
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# apt_install PKG...: install Debian packages that are missing (apt-get update once per run).
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
  if [ -z "${WAND_APT_UPDATED:-}" ]; then
    timeout 600 apt-get update -qq >&2 || die "apt-get update failed"
    export WAND_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
}

# ensure_venv REPO: a virtualenv in REPO/.venv with kubectl-wand (editable) and the test dependencies.
ensure_venv() {
  local repo=$1 venv="$1/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  log "installing kubectl-wand and test dependencies into $venv"
  (cd "$repo" && timeout 900 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --config-settings editable_mode=compat -e '.[test]') \
    || die "pip install failed"
}
