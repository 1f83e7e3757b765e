# Shared by scripts/test and scripts/demo: checks root and installs the
# Debian packages mosix needs when they are missing.

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$1 needs root: it creates network and mount namespaces, cgroups and FUSE mounts." >&2
        echo "Run it as root (e.g. sudo $0)." >&2
        exit 1
    fi
}

# ensure_packages CMD:PACKAGE ... — apt-get installs PACKAGE when CMD is absent.
ensure_packages() {
    local missing=()
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing: ${missing[*]} (no apt-get here: install them with your package manager)" >&2
        exit 1
    fi
    echo "installing ${missing[*]} with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
        exit 1
    fi
}
