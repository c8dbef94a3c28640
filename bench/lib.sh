# Shared by the benchmark scripts (sourced, not run).

# The median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Wait up to 10 s for a TCP port on loopback to accept connections.
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2
  return 1
}

count_files() { find "$1" -type f 2>/dev/null | wc -l; }

# Wait up to 5 minutes until DIR holds at least N files.
wait_delivered() {
  local dir=$1 want=$2
  for _ in $(seq 600); do [ "$(count_files "$dir")" -ge "$want" ] && return 0; sleep 0.5; done
  echo "only $(count_files "$dir") of $want delivered in $dir" >&2; return 1
}

# The results table: one row per round, then the medians and their ratio.
# Arguments: portcullis' rates, "--", the peer's rates ($PEER, default
# Postfix).
report() {
  local a=() b=() side=a x
  for x in "$@"; do
    if [ "$x" = "--" ]; then side=b; continue; fi
    if [ $side = a ]; then a+=("$x"); else b+=("$x"); fi
  done
  local pa pb
  pa=$(median "${a[@]}") pb=$(median "${b[@]}")
  local peer=${PEER:-Postfix}
  printf '| run | portcullis msg/s | %s msg/s |\n|---|---|---|\n' "$peer"
  for i in "${!a[@]}"; do printf '| %d | %.0f | %.0f |\n' $((i + 1)) "${a[$i]}" "${b[$i]}"; done
  printf '| **median** | **%.0f** | **%.0f** |\n\nRatio portcullis/%s: **%.2f**\n' "$pa" "$pb" "$peer" "$(echo "$pa / $pb" | bc -l)"
}

# A portcullis config for raw-speed runs: one mx listener, the local
# domain bench.test taking any local part, class-of-service limits off
# (the peers compared in the same run have theirs off too; cos_flood.sh
# measures limits). Arguments: DIR (config and data go there), mx PORT,
# DNS server HOST:PORT.
speed_config() {
  local dir=$1 port=$2 dns=$3
  mkdir -p "$dir"
  cat > "$dir/portcullis.toml" <<CONF
hostname = "mx.bench.test"
data_dir = "$dir/data"
[dns]
nameservers = ["$dns"]
[[listener]]
role = "mx"
bind = ["127.0.0.1:$port"]
[[domain]]
name = "bench.test"
recipients = "any"
$(for class in default new trusted high; do
  # Every class: an SPF-identified sender (bench RECORDS) lands in "new".
  printf '[class.%s]\nmax_connections = 0\nconnections_per_minute = 0\nmessages_per_minute = 0\nrecipients_per_minute = 0\nbytes_per_minute = 0\n' "$class"
done)
[admission]
per_range_max_connections = 0
per_range_connections_per_minute = 0
CONF
}
