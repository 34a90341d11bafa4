#!/usr/bin/env bash
# Builds the Debian packages of Outpost:
#
#   deploy/package/build.sh      ->  dist/outpost_<version>_amd64.deb, dist/outpost_<version>_arm64.deb
#
# Environment (all optional):
#   VERSION     package and binary version; default from git (below)
#   ARCHS       "amd64 arm64"
#   DIST        output directory, default dist/ at the repository root
#   MAINTAINER  the package's Maintainer field
#
# The binary is cross-built static (CGO_ENABLED=0, -trimpath) with version,
# commit and build date stamped for `outpost version` and CEF's Device
# Version; nfpm (a Go tool of this module, go.mod's `tool` line) writes the
# .deb. Needs only Go and git. See deploy/package/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
dirty=
if [ "$commit" != unknown ] && [ -z "${COMMIT:-}" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=1
	commit="${commit}+dirty"
fi

# The default version: the tag vX.Y.Z at HEAD as X.Y.Z; otherwise the last
# such tag (0.0.0 without one) + "+git<commit time>.<short commit>", so that
# later commits sort later for dpkg; ".dirty" for uncommitted changes.
default_version() {
	local tag base ts
	tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)
	base=${tag#v}
	if [ -n "$tag" ] && [ -z "$dirty" ] && [ "$(git rev-list -n1 "$tag")" = "$(git rev-parse HEAD)" ]; then
		echo "$base"
		return
	fi
	ts=$(TZ=UTC git show -s --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
	echo "${base:-0.0.0}+git${ts}.$(git rev-parse --short=7 HEAD 2>/dev/null || echo 0)${dirty:+.dirty}"
}
version=${VERSION:-$(default_version)}
# A Debian upstream version, which also goes into -ldflags unquoted.
if ! [[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
	echo "build.sh: VERSION '$version' is not a Debian version (a digit, then letters, digits, . + ~ -)" >&2
	exit 2
fi

if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	date=$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)
else
	date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi
dist=${DIST:-dist}
mkdir -p "$dist"

# The conffile: the example config with no forwarder destination (the admin
# names the SIEM; until then check-config says so and postinst does not
# start the service), the example's destination kept as a comment, and a
# pointer to the pack's files.
stage_config() {
	awk '
		/^  destinations:$/ {
			print "  # None yet: name your SIEM here (check-config and the service refuse"
			print "  # to run without one), e.g. uncomment and edit the entry below."
			print "  destinations: []"
			inside = 1; next
		}
		inside && /^    / { sub(/^  /, "  # "); print; next }
		{ inside = 0 }
		/^  # Directory of rule files/ {
			print
			print "  # The shipped pack is also installed as files, to read or to copy:"
			print "  # /usr/share/outpost/rules."
			next
		}
		{ print }
	' deploy/outpost.example.yaml >"$1"
	if ! grep -q '^  destinations: \[\]$' "$1"; then
		echo "build.sh: deploy/outpost.example.yaml has no '  destinations:' block to comment out" >&2
		exit 1
	fi
}

for arch in ${ARCHS:-amd64 arm64}; do
	stage="$dist/stage/linux_$arch"
	mkdir -p "$stage"
	echo "--- outpost $version linux/$arch"
	CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath \
		-ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$date" \
		-o "$stage/outpost" ./cmd/outpost
	stage_config "$stage/outpost.yaml"
	OUTPOST_VERSION="$version" OUTPOST_ARCH="$arch" OUTPOST_STAGE="$stage" \
		OUTPOST_MAINTAINER="${MAINTAINER:-Outpost maintainers <outpost@outpost-siem.invalid>}" \
		go tool nfpm package --config deploy/package/nfpm.yaml --packager deb --target "$dist/"
done
rm -rf "$dist/stage"
