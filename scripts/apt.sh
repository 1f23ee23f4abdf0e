# Sourced by the install scripts: apt_install WHO PACKAGE... installs Debian packages
# (without their recommends) as root or through sudo, or says clearly why it cannot.
apt_install() {
  local who="$1"
  shift
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "$who: need root (or sudo) to apt-get install $*" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: no apt-get; install $* by hand" >&2
    return 1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "$@" >/dev/null
}
