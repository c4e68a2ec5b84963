# Shared shell helpers for hack/ scripts. Sourced, never run.
# Caches live outside the work tree so a fresh clone reuses them; override with WAND_CACHE.
WAND_CACHE="${WAND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-wand}"
export WAND_CACHE
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# take_lock FILE [SECONDS]: hold an exclusive flock on FILE until this script exits (fd 9), waiting at most
# SECONDS (default 3600) for another run to finish. A child that may outlive the script must close fd 9
# (`cmd 9>&-`), else it keeps the lock. The kernel drops the lock when its holder dies, even by SIGKILL.
# detach LOG CMD...: run CMD in the background in a session of its own, stdin /dev/null, output appended to
# LOG, with no descriptor of ours but 0-2: a lock held by whoever ran us must not outlive us in a daemon (seen:
# `flock /tmp/wand-e2e.lock hack/test` started dockerd, which kept the lock's descriptor, and every later flock
# waited forever). $! is CMD's pid: a background subshell of a non-interactive shell leads no process group,
# so setsid does not fork.
detach() {
  local out=$1; shift
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" </dev/null >>"$out" 2>&1
  ) &
}
take_lock() {
  local file=$1 secs=${2:-3600}
  mkdir -p "$(dirname "$file")"
  exec 9>>"$file"
  if ! flock -n 9; then
    log "waiting for another run to finish (lock $file, up to ${secs}s)"
    flock -w "$secs" 9 || die "another run held $file for ${secs}s; is it stuck? (see: fuser -v $file)"
  fi
}

# mounts_under DIR: mount points at or below DIR (canonical path), newest first, so children come before
# the mounts they sit on.
mounts_under() {
  awk -v d="$1" '{ m = $5; gsub(/\\040/, " ", m); gsub(/\\011/, "\t", m); gsub(/\\134/, "\\", m)
                   if (m == d || index(m, d "/") == 1) print m }' /proc/self/mountinfo | tac
}
# unmount_under DIR: unmount everything mounted below DIR (lazily when busy); fails if anything is left.
unmount_under() {
  local d m
  d=$(realpath -e "$1" 2>/dev/null) || return 0
  while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(mounts_under "$d")
  [ -z "$(mounts_under "$d")" ] || { log "still mounted under $d: $(mounts_under "$d" | tr '\n' ' ')"; return 1; }
}
# remove_tree DIR: unmount what is mounted below DIR, then remove it. A failed or killed debootstrap leaves
# /proc (and /sys) mounted in its target, where a plain rm -rf fails (EBUSY) or walks the host's /proc.
remove_tree() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  unmount_under "$1" || die "cannot unmount everything under $1"
  rm -rf --one-file-system "$1" || die "cannot remove $1"
}

# installed PKG: true when dpkg has PKG fully installed (`dpkg -s` also says yes for a package a killed run left
# half-installed or unpacked, or whose config files alone remain).
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

# apt_install PKG...: install Debian packages that are missing (apt-get update once per run). Safe to run twice at
# once (one flock for every run of ours, and apt's own lock waited for, not failed on) and after a failed run (a
# half-installed package counts as missing; a dpkg a kill interrupted is finished with `dpkg --configure -a`).
APT_LOCK=${WAND_APT_LOCK:-/run/lock/kubectl-wand-apt.lock}
apt_install() {
  local p pending=()
  for p in "$@"; do installed "$p" || pending+=("$p"); done
  [ ${#pending[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${pending[*]}"
  mkdir -p "$(dirname "$APT_LOCK")"
  # fd 8 in a subshell: the lock ends with it; closed for apt and dpkg (8>&-), so that no daemon a package's
  # maintainer script starts keeps it (a later run would wait on it forever)
  ( flock -w 1800 8 || die "another run held $APT_LOCK for 30 minutes (see: fuser -v $APT_LOCK)"
    local missing=() apt=(apt-get -qq -o DPkg::Lock::Timeout=600)
    for p in "$@"; do installed "$p" || missing+=("$p"); done  # the run we waited for may have installed them
    [ ${#missing[@]} -eq 0 ] && exit 0
    if [ -z "${WAND_APT_UPDATED:-}" ]; then
      timeout 600 "${apt[@]}" update >&2 8>&- || die "apt-get update failed"
    fi
    try() { DEBIAN_FRONTEND=noninteractive timeout 1200 "${apt[@]}" install -y --no-install-recommends \
              "${missing[@]}" >&2 8>&-; }
    if ! try; then
      log "apt-get install ${missing[*]} failed; finishing what an interrupted dpkg left (dpkg --configure -a), once"
      DEBIAN_FRONTEND=noninteractive timeout 600 dpkg --configure -a >&2 8>&- || true
      try || die "apt-get install ${missing[*]} failed"
    fi
  ) 8>>"$APT_LOCK" || exit 1
  export WAND_APT_UPDATED=1
}

# ensure_venv REPO: a virtualenv in REPO/.venv with kubectl-wand (editable) and the test dependencies.
ensure_venv() {
  local repo=$1 venv="$1/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    # Debian's python3 makes virtualenvs only with python3-venv (ensurepip)
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    log "creating $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  log "installing kubectl-wand and test dependencies into $venv"
  (cd "$repo" && timeout 900 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --config-settings editable_mode=compat -e '.[test]') \
    || die "pip install failed"
}
