#!/usr/bin/env bash
# Build the otel-audit reference OpenTelemetry Collector once per machine and print its path.
#
# Usage: bash scripts/build-collector.sh [--print]
#   (no flag)  build if missing, report progress on stderr, print the binary path on stdout
#   --print    the same, but silent on stderr when the binary is already cached
#
# The binary is cached OUTSIDE the repository, keyed by the SHA-256 of collector/manifest.yaml
# plus this script's recipe version, so editing the manifest rebuilds and nothing else does:
#   ${OTEL_AUDIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-audit}/collector/<key>/otelcol-audit
# The builder (ocb) is installed into the same cache (GOBIN), never into the user's GOPATH/bin.
# A flock on <key>.lock makes concurrent callers (parallel test runs, `make test` + `make demo`)
# wait for one build instead of racing; the binary appears by an atomic rename, so a reader
# never sees a half-written file.
set -euo pipefail

# Bump when the build recipe changes in a way that must invalidate cached binaries.
RECIPE_VERSION=1
BUILDER_MODULE=go.opentelemetry.io/collector/cmd/builder
BUILDER_VERSION=v0.161.0
BINARY_NAME=otelcol-audit

quiet_if_cached=0
case "${1:-}" in
  "") ;;
  --print) quiet_if_cached=1 ;;
  -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build-collector: unknown argument '$1' (expected --print)" >&2; exit 2 ;;
esac

say() { echo "build-collector: $*" >&2; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifest="$repo_root/collector/manifest.yaml"
if [[ ! -f "$manifest" ]]; then
  say "manifest not found at $manifest"
  exit 2
fi

cache_root=${OTEL_AUDIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-audit}
key=$({ cat "$manifest"; printf 'recipe=%s builder=%s@%s\n' "$RECIPE_VERSION" "$BUILDER_MODULE" "$BUILDER_VERSION"; } \
  | sha256sum | cut -c1-16)
out_dir="$cache_root/collector/$key"
binary="$out_dir/$BINARY_NAME"

if [[ -x "$binary" ]]; then
  [[ $quiet_if_cached == 1 ]] || say "cached: $binary"
  echo "$binary"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  say "Go toolchain not found on PATH; the collector is built from source with the official builder."
  say "Install Go >= 1.26 (the v0.161.0 modules declare go 1.26.0), or set OTEL_AUDIT_COLLECTOR_BIN"
  say "to an existing otelcol binary that has the components listed in $manifest."
  exit 3
fi

mkdir -p "$cache_root/collector"
lock="$cache_root/collector/$key.lock"
exec 9>"$lock"
if ! flock -n 9; then
  say "another build of $key is running; waiting for it (lock $lock)"
  flock 9
fi

# Re-check under the lock: the build we waited for has produced the binary.
if [[ -x "$binary" ]]; then
  [[ $quiet_if_cached == 1 ]] || say "built by a concurrent caller: $binary"
  echo "$binary"
  exit 0
fi

start=$(date +%s)
builder_dir="$cache_root/builder/$BUILDER_VERSION"
builder="$builder_dir/builder"
if [[ ! -x "$builder" ]]; then
  say "installing $BUILDER_MODULE@$BUILDER_VERSION into $builder_dir"
  mkdir -p "$builder_dir"
  GOBIN="$builder_dir" go install "$BUILDER_MODULE@$BUILDER_VERSION" >&2
fi

work=$(mktemp -d "$cache_root/collector/$key.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$manifest" "$work/manifest.yaml"
say "building $BINARY_NAME from $manifest (first build takes a minute or two; later calls use the cache)"
# output_path in the manifest is relative, so run from the scratch dir: the generated sources
# and go.mod land there, never in the repository.
(cd "$work" && "$builder" --config manifest.yaml >"$work/builder.log" 2>&1) || {
  say "builder failed; last lines of its log:"
  tail -n 40 "$work/builder.log" >&2
  exit 1
}

mkdir -p "$out_dir"
cp "$work/_build/$BINARY_NAME" "$out_dir/.$BINARY_NAME.tmp"
chmod 0755 "$out_dir/.$BINARY_NAME.tmp"
mv -f "$out_dir/.$BINARY_NAME.tmp" "$binary"
cp "$manifest" "$out_dir/manifest.yaml"
say "built $binary in $(( $(date +%s) - start )) s"
echo "$binary"
