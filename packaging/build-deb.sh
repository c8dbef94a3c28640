#!/usr/bin/env bash
# Build the Debian packages of portcullis with dpkg-deb:
#   portcullis_VERSION-1_ARCH.deb         the stripped binary, the config
#                                         (/etc/portcullis/portcullis.toml,
#                                         a conffile), the systemd unit, man
#                                         pages (portcullis.toml(5) from
#                                         docs/configuration.md), shell
#                                         completions, docs;
#                                         postinst makes the `portcullis`
#                                         system user and /var/lib/portcullis
#   portcullis-dbgsym_VERSION-1_ARCH.deb  its debug info, by build id
#
#   bash packaging/build-deb.sh [--binary PATH] [--out DIR]
#
# Without --binary the release binary is built first. Check the result with
#   lintian --fail-on error DIR/*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
bin="" out="target-deb"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    cargo build --release --locked
    bin="$CARGO_TARGET_DIR/release/portcullis"
fi
upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
version="$upstream-1"
arch=$(dpkg --print-architecture)
maintainer="portcullis maintainers <maintainers@portcullis.invalid>"
# Reproducible: every date is the last commit's.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/portcullis" dbg="$work/portcullis-dbgsym"
mkdir -p "$out"

# The binary, its debug info split out (objcopy, as dh_strip does).
install -d "$root/usr/bin" "$root/DEBIAN"
build_id=$(readelf -n "$bin" | awk '/Build ID/ {print $3}')
[ -n "$build_id" ] || { echo "$bin has no build id" >&2; exit 1; }
debug_file="$dbg/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug"
install -d "$(dirname "$debug_file")" "$dbg/DEBIAN"
objcopy --only-keep-debug --compress-debug-sections "$bin" "$debug_file"
chmod 0644 "$debug_file"
objcopy --remove-section=.comment --remove-section=.note --strip-unneeded \
    --add-gnu-debuglink="$debug_file" "$bin" "$root/usr/bin/portcullis"
chmod 0755 "$root/usr/bin/portcullis"

# The config (the example, every option with its default), the unit.
install -D -m 0644 portcullis.example.toml "$root/etc/portcullis/portcullis.toml"
install -D -m 0644 packaging/portcullis.service "$root/lib/systemd/system/portcullis.service"

# Man pages and completions, generated from the command line itself, and
# portcullis.toml(5): docs/configuration.md (built into the binary) as roff.
"$root/usr/bin/portcullis" generate-docs --out "$work/docs"
install -d "$root/usr/share/man/man1" "$root/usr/share/man/man5"
for page in "$work"/docs/man/*.1; do
    gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
done
gzip -9n < "$work/docs/man/portcullis.toml.5" > "$root/usr/share/man/man5/portcullis.toml.5.gz"
install -D -m 0644 "$work/docs/completions/portcullis.bash" "$root/usr/share/bash-completion/completions/portcullis"
install -D -m 0644 "$work/docs/completions/_portcullis" "$root/usr/share/zsh/vendor-completions/_portcullis"
install -D -m 0644 "$work/docs/completions/portcullis.fish" "$root/usr/share/fish/vendor_completions.d/portcullis.fish"

# Documentation, copyright and changelog as Debian policy wants them.
doc="$root/usr/share/doc/portcullis"
install -d "$doc"
gzip -9n < README.md > "$doc/README.md.gz"
sed "s/@YEAR@/$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)/" packaging/copyright > "$doc/copyright"
changelog() { # package
    printf '%s (%s) unstable; urgency=medium\n\n  * Built from the portcullis repository (%s).\n\n -- %s  %s\n' \
        "$1" "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$maintainer" \
        "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" | gzip -9n
}
changelog portcullis > "$doc/changelog.Debian.gz"
install -m 0755 packaging/postinst packaging/postrm "$root/DEBIAN/"
echo /etc/portcullis/portcullis.toml > "$root/DEBIAN/conffiles"

# Dependencies: the newest glibc symbol version the binary needs.
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
control() { # dir package extra-fields
    local size
    size=$(du -k -s --exclude=DEBIAN "$1" | cut -f1)
    {
        echo "Package: $2"
        echo "Version: $version"
        echo "Architecture: $arch"
        echo "Maintainer: $maintainer"
        echo "Installed-Size: $size"
        echo "$3"
    } > "$1/DEBIAN/control"
    (cd "$1" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
}
control "$root" portcullis "Depends: libc6 (>= $glibc), libgcc-s1 (>= 3.0), adduser
Section: mail
Priority: optional
Homepage: https://github.com/portcullis-mail/portcullis
Description: mail server that stops abuse at the door
 portcullis is an SMTP server: submission (587/465) that always
 authenticates, transfer (25) that labels every message with
 SPF/DKIM/DMARC and never relays, rate control with a positive-reputation
 class of service, greylisting, a Postfix policy service, and OP25B rule
 generation. It delivers to Maildirs or over LMTP and relays outbound mail
 itself."
install -d "$dbg/usr/share/doc"
ln -s portcullis "$dbg/usr/share/doc/portcullis-dbgsym"
control "$dbg" portcullis-dbgsym "Depends: portcullis (= $version)
Section: debug
Priority: optional
Build-Ids: $build_id
Description: debug symbols for portcullis
 The debug information split out of the portcullis binary, found by its
 build id."

for d in "$root" "$dbg"; do
    find "$d" -type d -exec chmod 0755 {} +
    dpkg-deb --root-owner-group -Zxz --build "$d" "$out" >/dev/null
done
ls "$out"/*_"$version"_"$arch".deb
