#!/usr/bin/env bash
# Fetch the prebuilt DuckDB 1.5.6 C library (libduckdb.so) that the `duckdb` crate (=1.10506.0)
# links against, instead of compiling DuckDB's C++ with the crate's `bundled` feature (27 min on
# 2 cores). Prints the library directory on stdout (use it as DUCKDB_LIB_DIR); messages go to
# stderr. Idempotent: a library already in place whose sha256 matches is left alone.
#
# Sources, in order:
#   1. GL_LIBDUCKDB_ZIP=/path/to/libduckdb-linux-amd64.zip  — DuckDB's own release archive
#      (https://github.com/duckdb/duckdb/releases/download/v1.5.6/libduckdb-linux-amd64.zip),
#      for machines that reach GitHub but not npm; it must be the v1.5.6 archive.
#   2. npm: `npm pack @duckdb/node-bindings-linux-x64@1.5.6-r.1`, file package/libduckdb.so.
# Last resort, not handled here: build with the crate's `bundled` feature (see SETUP-duckdb.md).
#
# Environment:
#   GL_DUCKDB_DIR        target directory (default ${GL_CACHE:-$HOME/.cache/grouploss}/duckdb-1.5.6,
#                        the justfile's cache)
#   GL_LIBDUCKDB_ZIP     path to libduckdb-linux-amd64.zip (source 1)
#   GL_LIBDUCKDB_SHA256  expected sha256 of libduckdb.so (overrides the pin below)
set -euo pipefail

DUCKDB_VERSION=1.5.6
NPM_PACKAGE="@duckdb/node-bindings-linux-x64@${DUCKDB_VERSION}-r.1"
# sha256 of package/libduckdb.so in ${NPM_PACKAGE}, pinned 2026 from the npm registry.
NPM_LIBDUCKDB_SHA256=3f4962cdd266eab2b479a5b5a4a6d063d279b2954ae814ed00385d553b747633

dir="${GL_DUCKDB_DIR:-${GL_CACHE:-$HOME/.cache/grouploss}/duckdb-${DUCKDB_VERSION}}"
lib="$dir/libduckdb.so"
zip_pin_file="$dir/libduckdb.so.zip-sha256"

log() { echo "fetch-libduckdb: $*" >&2; }
die() { log "error: $*"; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# Which hash the library must have: explicit env > npm pin (npm source) > hash recorded on the
# first fetch from a zip (trust on first use; it is printed so it can be pinned).
expected_sha() {
    if [[ -n "${GL_LIBDUCKDB_SHA256:-}" ]]; then
        echo "$GL_LIBDUCKDB_SHA256"
    elif [[ -z "${GL_LIBDUCKDB_ZIP:-}" ]]; then
        echo "$NPM_LIBDUCKDB_SHA256"
    elif [[ -f "$zip_pin_file" ]]; then
        cat "$zip_pin_file"
    fi
}

mkdir -p "$dir"
want="$(expected_sha)"

if [[ -f "$lib" ]]; then
    have="$(sha_of "$lib")"
    if [[ -n "$want" && "$have" == "$want" ]]; then
        log "$lib already present (sha256 $have)"
        echo "$dir"
        exit 0
    fi
    log "$lib has sha256 $have, expected ${want:-<none recorded>}; fetching again"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -n "${GL_LIBDUCKDB_ZIP:-}" ]]; then
    [[ -f "$GL_LIBDUCKDB_ZIP" ]] || die "GL_LIBDUCKDB_ZIP=$GL_LIBDUCKDB_ZIP is not a file"
    command -v unzip >/dev/null || die "unzip is needed to read $GL_LIBDUCKDB_ZIP"
    log "extracting libduckdb.so from $GL_LIBDUCKDB_ZIP"
    unzip -q -o "$GL_LIBDUCKDB_ZIP" libduckdb.so duckdb.h -d "$work" \
        || die "$GL_LIBDUCKDB_ZIP has no libduckdb.so/duckdb.h (is it libduckdb-linux-amd64.zip?)"
    cp "$work/duckdb.h" "$dir/duckdb.h.tmp" && mv "$dir/duckdb.h.tmp" "$dir/duckdb.h"
    new="$work/libduckdb.so"
else
    command -v npm >/dev/null || die "npm not found; set GL_LIBDUCKDB_ZIP to DuckDB's libduckdb-linux-amd64.zip instead"
    log "npm pack $NPM_PACKAGE"
    (cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null) || die "npm pack $NPM_PACKAGE failed"
    tar -xzf "$work"/duckdb-node-bindings-linux-x64-*.tgz -C "$work" package/libduckdb.so \
        || die "the npm tarball of $NPM_PACKAGE has no package/libduckdb.so"
    new="$work/package/libduckdb.so"
fi

grep -aq "v${DUCKDB_VERSION}" "$new" || die "the fetched libduckdb.so does not say v${DUCKDB_VERSION}"
got="$(sha_of "$new")"
if [[ -n "$want" && "$got" != "$want" ]]; then
    die "libduckdb.so sha256 is $got, expected $want (set GL_LIBDUCKDB_SHA256 to accept another build)"
fi
cp "$new" "$lib.tmp" && mv "$lib.tmp" "$lib"
if [[ -n "${GL_LIBDUCKDB_ZIP:-}" ]]; then echo "$got" >"$zip_pin_file"; fi
log "installed $lib"
log "sha256 $got  (pin it with GL_LIBDUCKDB_SHA256 or in this script)"
echo "$dir"
