#!/usr/bin/env bash
# Start a throw-away Postfix instance for side-by-side benchmarks.
#   postfix_instance.sh start DIR PORT   smtpd on 127.0.0.1:PORT, Maildir delivery for bench.test
#   postfix_instance.sh stop DIR
# Everything (config, queue, mail) lives under DIR; the system Postfix
# config is not touched. PF_ADDR (default 127.0.0.1, e.g. "[::1]", or
# "all") is the listening address; PF_EXTRA is appended to main.cf (anvil
# limits).
set -euo pipefail
action=$1 dir=$2
case "$action" in
start)
  port=$3
  addr=${PF_ADDR:-127.0.0.1}
  interfaces=${addr//[\[\]]/}
  service="$addr:$port"
  [ "$addr" = all ] && service=$port
  protocols=ipv4
  [[ $interfaces == *:* ]] && protocols=all
  mkdir -p "$dir/etc" "$dir/spool" "$dir/data" "$dir/mail"
  cp /etc/postfix/master.cf.proto "$dir/etc/master.cf"
  # Listen on our port only; keep the stock services for the rest.
  sed -i "s/^smtp      inet  n       -       y       -       -       smtpd/$service      inet  n       -       n       -       -       smtpd/" "$dir/etc/master.cf"
  cp /etc/postfix/dynamicmaps.cf "$dir/etc/" 2>/dev/null || true
  uid=$(id -u postfix) gid=$(id -g postfix)
  chown -R postfix:postfix "$dir/mail" "$dir/data"
  cat > "$dir/etc/main.cf" <<CONF
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/spool
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydestination =
inet_interfaces = $interfaces
inet_protocols = $protocols
mynetworks = 127.0.0.0/8
maillog_file_prefixes = $dir
maillog_file = $dir/maillog
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = static:bench.test/u/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
default_process_limit = 100
smtputf8_enable = no
${PF_EXTRA:-}
CONF
  # Postfix reports fatal errors on a terminal or syslog only; script(1)
  # gives it a terminal so a mistake is seen.
  script -qec "postfix -c $dir/etc check" /dev/null
  script -qec "postfix -c $dir/etc start" /dev/null
  ;;
stop)
  postfix -c "$dir/etc" stop || true
  ;;
esac
