#!/usr/bin/env bash
# A throw-away NSD on loopback serving an empty `test.` zone, so that the
# server under benchmark resolves (NXDOMAIN, at once) without ever asking
# the system resolver; and the reverse zone of 2001:db8::/32, so that a
# PTR lookup of a benchmark client gets a real (cacheable) NXDOMAIN as on
# the Internet, not a REFUSED that no resolver caches.
#   nsd_instance.sh start DIR PORT [RECORDS] | stop DIR
# RECORDS: zone lines (relative to test.) appended to the zone.
set -euo pipefail
action=$1 dir=$2
case "$action" in
start)
  port=$3
  mkdir -p "$dir"
  printf '$ORIGIN test.\n$TTL 60\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n@ IN NS ns.test.\nns IN A 127.0.0.1\n' > "$dir/test.zone"
  printf '%s\n' "${4:-}" >> "$dir/test.zone"
  printf '$ORIGIN 8.b.d.0.1.0.0.2.ip6.arpa.\n$TTL 60\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n@ IN NS ns.test.\n' > "$dir/reverse6.zone"
  cat > "$dir/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$port
  port: $port
  username: ""
  chroot: ""
  zonesdir: $dir
  pidfile: $dir/nsd.pid
  xfrdfile: $dir/xfrd.state
  zonelistfile: $dir/zone.list
  logfile: $dir/nsd.log
  server-count: 1
remote-control:
  control-enable: no
zone:
  name: test
  zonefile: test.zone
zone:
  name: 8.b.d.0.1.0.0.2.ip6.arpa
  zonefile: reverse6.zone
CONF
  nsd -c "$dir/nsd.conf"
  ;;
stop)
  [ -f "$dir/nsd.pid" ] && kill "$(cat "$dir/nsd.pid")" 2>/dev/null || true
  ;;
esac
