# Shared helpers for scripts/run and scripts/test (sourced, not executed).

# Installs the Debian packages given as arguments that are not installed yet.
install_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root, or install them first)" >&2
        return 1
    fi
    echo "==> installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Makes sure a Rust toolchain new enough for the workspace is on PATH.
require_rust() {
    [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: install Rust 1.85 or newer (rustup) first" >&2
        return 1
    fi
}

# Starts a throwaway PostgreSQL cluster owned by this run on a free loopback port, exports
# PAPERCUP_TEST_PG_URL, and stops and deletes it (by its PID) when the script exits.
start_test_postgres() {
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$pg_bin/initdb" ] || { echo "PostgreSQL's initdb not found" >&2; exit 1; }
    pg_dir=$(mktemp -d /tmp/papercup-pg.XXXXXX)
    as_pg() {
        if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
    }
    [ "$(id -u)" -eq 0 ] && chown postgres "$pg_dir"
    cleanup() {
        if [ -f "$pg_dir/data/postmaster.pid" ]; then
            kill "$(head -n 1 "$pg_dir/data/postmaster.pid")" 2>/dev/null || true
            for _ in $(seq 50); do [ -f "$pg_dir/data/postmaster.pid" ] || break; sleep 0.1; done
        fi
        rm -rf "$pg_dir"
    }
    trap cleanup EXIT
    as_pg "'$pg_bin/initdb' -D '$pg_dir/data' -A trust -U papercup -E UTF8 >'$pg_dir/initdb.log' 2>&1"
    # A random high port; another one if it is taken.
    local started=""
    for _ in 1 2 3 4 5 6 7 8; do
        pg_port=$((20000 + RANDOM % 40000))
        if as_pg "'$pg_bin/pg_ctl' -D '$pg_dir/data' -l '$pg_dir/server.log' -w -t 60 \
            -o \"-p $pg_port -k '$pg_dir' -c listen_addresses=127.0.0.1 -c max_connections=400 \
                -c fsync=off -c synchronous_commit=off -c full_page_writes=off\" start >/dev/null"; then
            started=1
            break
        fi
    done
    [ -n "$started" ] || { echo "PostgreSQL did not start:" >&2; cat "$pg_dir/server.log" >&2; exit 1; }
    echo "==> PostgreSQL for this run on 127.0.0.1:$pg_port (data in $pg_dir)"
    export PAPERCUP_TEST_PG_URL="postgres://papercup@127.0.0.1:$pg_port/postgres"
}
