#!/usr/bin/env bash
# Builds the Kubernetes 1.20.2 control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler) from Debian's source package, for the local test cluster (test tier 4).
#
# Why from source: there is no Docker engine here (so no kind) and no internet besides package
# registries. Debian's `kubernetes` source package vendors every Go dependency, so it builds
# offline with Debian's Go.
#
# The binaries are cached in a fixed directory keyed by version, $BIN_DIR from e2e/cluster.env
# (/var/cache/mesh-e2e/kubernetes-1.20.2/bin). When they are present the script exits at once.
# A cold build takes about 8-10 minutes on 2 cores.
#
# Usage (as root): e2e/build-control-plane.sh [--force]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster.env
source "$here/cluster.env"

force=false
[[ "${1:-}" == "--force" ]] && force=true

binaries=(kube-apiserver kube-controller-manager kube-scheduler)
# Bumped whenever the recipe changes what is built (a new source patch): binaries of an older
# revision in the cache are rebuilt rather than reused. 2: the empty-string fix of step 3b.
build_revision=2
cache_root="$(dirname "$BIN_DIR")"          # /var/cache/mesh-e2e/kubernetes-1.20.2
src_root="$cache_root/src"
go_cache="$(dirname "$cache_root")/go-build" # survives a --force rebuild

log() { printf '[build-control-plane] %s\n' "$*"; }
die() { printf '[build-control-plane] ERROR: %s\n' "$*" >&2; exit 1; }

have_all_binaries() {
    local b
    for b in "${binaries[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
    [[ "$(cat "$BIN_DIR/.build-revision" 2>/dev/null)" == "$build_revision" ]]
}

if ! $force && have_all_binaries; then
    log "Kubernetes $K8S_VERSION binaries already in $BIN_DIR, nothing to do"
    exit 0
fi

[[ $EUID -eq 0 ]] || die "run as root (it installs packages with apt-get)"

# One build at a time (`local-cluster up` runs this script too); a second run waits for the
# first and then finds the binaries.
mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
    log "another build is running; waiting for it (up to 30 minutes)"
    flock -w 1800 9 || die "timed out after 30 minutes waiting for the other build ($cache_root/.build.lock)"
    if ! $force && have_all_binaries; then
        log "the other build finished: binaries in $BIN_DIR"
        exit 0
    fi
fi

# --- 1. apt: a deb-src entry and the packages we need ------------------------------------------

# apt refuses every source when two entries for one URI disagree on Signed-By, so the deb-src
# entry copies the keyring of the existing entry for deb.debian.org/debian.
src_list=/etc/apt/sources.list.d/mesh-e2e-deb-src.sources
mirror=http://deb.debian.org/debian
has_deb_src() { # a deb-src line or deb822 stanza for $mirror
    grep -qsE "^deb-src .*${mirror}/? " /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
    awk -v uri="$mirror" 'BEGIN { RS = ""; found = 1 }
        /(^|\n)Types:[^\n]*deb-src/ && $0 ~ ("URIs:[ \t]+" uri "([ \t\n]|$)") { found = 0 } END { exit found }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null
}
if ! has_deb_src; then
    keyring="$(awk -v uri="$mirror" '
        /^URIs:/      { hit = ($2 == uri) }
        /^Signed-By:/ { if (hit) { print $2; exit } }
        /^$/          { hit = 0 }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
    [[ -n "$keyring" ]] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    log "adding a bookworm deb-src entry ($src_list, Signed-By: $keyring)"
    cat >"$src_list" <<EOF
# Added by mesh e2e/build-control-plane.sh: source packages, to build Kubernetes 1.20 offline.
Types: deb-src
URIs: $mirror
Suites: bookworm
Components: main
Signed-By: $keyring
EOF
    need_update=true
else
    log "a deb-src entry exists already"
    need_update=false
fi

packages=(golang-go golang-github-modern-go-reflect2-dev etcd-server openssl iproute2 iptables
          util-linux dpkg-dev procps curl ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[[ -n "$(apt-cache showsrc kubernetes 2>/dev/null | head -1)" ]] || need_update=true
if $need_update || ((${#missing[@]})); then
    log "apt-get update"
    apt-get update -q
fi
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "packages present: ${packages[*]}"
fi
command -v go >/dev/null || die "go not found after installing golang-go"
log "$(go version)"
[[ -n "$(apt-cache showsrc kubernetes 2>/dev/null | head -1)" ]] \
    || die "apt knows no source package 'kubernetes' (check the deb-src entry in $src_list)"

# --- 2. the source package -----------------------------------------------------------------------

src_dir="$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' 2>/dev/null | head -1 || true)"
if [[ -z "$src_dir" || ! -f "$src_dir/.mesh-e2e-unpacked" ]]; then
    rm -rf "$src_root"
    mkdir -p "$src_root"
    log "fetching the Debian source package 'kubernetes' into $src_root"
    (cd "$src_root" && apt-get source -q kubernetes)
    src_dir="$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)"
    [[ -n "$src_dir" ]] || die "apt-get source kubernetes produced no kubernetes-* directory"
    touch "$src_dir/.mesh-e2e-unpacked"
else
    log "source already unpacked in $src_dir"
fi
[[ -d "$src_dir/vendor" ]] || die "$src_dir has no vendor/ directory; this is not the expected source package"

# --- 3. the reflect2 fix -------------------------------------------------------------------------

# The vendored reflect2 (1.0.1) reads Go runtime internals that changed in Go 1.18: with Debian's
# Go 1.19 the apiserver crashes on its first map encode. 1.0.2 has the fix and the same API.
new_reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
vendored_reflect2="$src_dir/vendor/github.com/modern-go/reflect2"
[[ -d "$new_reflect2" ]] || die "$new_reflect2 missing (package golang-github-modern-go-reflect2-dev)"
if [[ ! -f "$vendored_reflect2/.mesh-e2e-replaced" ]]; then
    log "replacing vendored reflect2 with $new_reflect2"
    rm -rf "$vendored_reflect2"
    mkdir -p "$vendored_reflect2"
    # Only the package's Go files: the vendor tree must not gain nested modules or tests.
    find "$new_reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
        -exec cp -L {} "$vendored_reflect2/" \;
    touch "$vendored_reflect2/.mesh-e2e-replaced"
fi

# --- 3b. the empty-string fix ----------------------------------------------------------------------

# The custom-resource validator treats a value as null when
# `reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(data))`. Under the Go that built 1.20 that
# compared two reflect.Value headers and so never held for real data; under Go 1.19 it holds for
# every zero value, and the API server refuses any custom resource with an empty string, a 0 or a
# false in it (`spec.host: Invalid value: "null"`), e.g. the `group: ""` of every Gateway API
# targetRef. `data == nil` is what the old build did in effect; later kube-openapi says the same.
for type_go in "$src_dir/vendor/github.com/go-openapi/validate/type.go" \
               "$src_dir/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go"; do
    [[ -f "$type_go" ]] || continue
    if grep -q 'data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))' "$type_go"; then
        log "patching the zero-value check in ${type_go#"$src_dir"/}"
        sed -i 's/data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))/data == nil/' "$type_go"
    fi
done

# --- 4. build ------------------------------------------------------------------------------------

# Kubernetes 1.20 builds in GOPATH mode (GO111MODULE=off, as its own hack/lib/golang.sh and
# Debian's debian/rules do), with the vendor/ tree and its symlinks into staging/. Module mode
# (-mod=vendor) fails under Go 1.19 with "updates to go.mod needed": 1.20's go.mod predates the
# module-graph checks of Go 1.17+.
gopath="$cache_root/gopath"
mkdir -p "$gopath/src/k8s.io"
ln -sfn "$src_dir" "$gopath/src/k8s.io/kubernetes"
pkg_dir="$gopath/src/k8s.io/kubernetes"

# Version stamping, as hack/lib/version.sh does it, so `kubectl version` shows v1.20.2. In GOPATH
# mode the vendored packages are named k8s.io/kubernetes/vendor/...; both spellings are set.
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for name in "$pkg" "k8s.io/kubernetes/vendor/$pkg"; do
        ldflags+=" -X $name.gitVersion=v$K8S_VERSION -X $name.gitMajor=${K8S_VERSION%%.*}"
        ldflags+=" -X $name.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X $name.gitTreeState=clean"
        ldflags+=" -X $name.gitCommit=debian-$K8S_VERSION -X $name.buildDate=$build_date"
    done
done

unset GOFLAGS
export GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local GOPATH="$gopath"
export GOCACHE="$go_cache"
mkdir -p "$GOCACHE" "$BIN_DIR.tmp"
start=$SECONDS

# The one generated file the release tarball lacks: the OpenAPI definitions of the built-in
# types (`make` runs openapi-gen for it, in Makefile.generated_files). The inputs are the
# packages tagged +k8s:openapi-gen, as there; the report must equal the known violations list.
openapi_out="$pkg_dir/pkg/generated/openapi/zz_generated.openapi.go"
if [[ ! -s "$openapi_out" ]]; then
    log "generating $openapi_out with the vendored openapi-gen"
    (cd "$pkg_dir" && go build -o "$cache_root/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen) \
        || die "building openapi-gen failed"
    inputs="$(cd "$pkg_dir" && grep -rlR --include='*.go' --exclude='*_test.go' '^// *+k8s:openapi-gen=' \
            pkg cmd plugin vendor/k8s.io 2>/dev/null \
        | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' -e '/testdata/' \
        | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)"
    [[ -n "$inputs" ]] || die "found no packages tagged +k8s:openapi-gen"
    (cd "$pkg_dir" && "$cache_root/openapi-gen" --logtostderr -i "$inputs" \
        -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
        -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$cache_root/openapi-violations.report") \
        || die "openapi-gen failed"
    diff -q "$cache_root/openapi-violations.report" "$pkg_dir/api/api-rules/violation_exceptions.list" >/dev/null \
        || log "note: openapi-gen's API rule report differs from api/api-rules/violation_exceptions.list"
    [[ -s "$openapi_out" ]] || die "openapi-gen wrote no $openapi_out"
fi

for b in "${binaries[@]}"; do
    log "building $b (GOPATH mode, vendored deps, CGO_ENABLED=0; the first one takes minutes)"
    t=$SECONDS
    (cd "$pkg_dir" && go build -ldflags "$ldflags" -o "$BIN_DIR.tmp/$b" "k8s.io/kubernetes/cmd/$b") \
        || die "go build cmd/$b failed"
    log "built $b in $((SECONDS - t))s"
done
"$BIN_DIR.tmp/kube-apiserver" --version | grep -q "v$K8S_VERSION" \
    || die "kube-apiserver --version does not report v$K8S_VERSION"

# Publish all three at once, so a half-finished build never looks like a cache hit.
echo "$build_revision" >"$BIN_DIR.tmp/.build-revision"
rm -rf "$BIN_DIR"
mv "$BIN_DIR.tmp" "$BIN_DIR"
log "done in $((SECONDS - start))s: $(cd "$BIN_DIR" && echo *) in $BIN_DIR"
"$BIN_DIR/kube-apiserver" --version
