# Shared by the benchmark scripts (sourced, not run).

# The median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Wait up to 10 s for a TCP port on loopback to accept connections.
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2
  return 1
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
