#!/usr/bin/env bash
# A throw-away NSD on loopback serving an empty `test.` zone, so that the
# server under benchmark resolves (NXDOMAIN, at once) without ever asking
# the system resolver.
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
CONF
  nsd -c "$dir/nsd.conf"
  ;;
stop)
  [ -f "$dir/nsd.pid" ] && kill "$(cat "$dir/nsd.pid")" 2>/dev/null || true
  ;;
esac
