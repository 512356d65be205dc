#!/usr/bin/env bash
# Records a history of increments made with curl, for the linearizability
# checker (tests/src/linearizable.rs): CLIENTS loops side by side, each
# doing OPS increments of KEY one after the other, against the kv-lin guest
# (POST ROUTE/incr/KEY answers the new value) or fake_kv_server.py.
#
#   tests/clients/curl_incr.sh URL KEY OPS CLIENTS OUT [HOST]
#
#   URL   base URL with the guest's route: https://127.0.0.1:8443/lin
#   KEY   a key no run used before (the checker takes every key to start
#         absent): letters, digits, - and _ only (it goes into JSON as is)
#   HOST  Host header to send (default: curl's, from URL)
#   CURL_ARGS (environment) more curl options, split on spaces, e.g.
#         CURL_ARGS="--resolve localhost:8443:127.0.0.1" with
#         URL=https://localhost:8443/lin to send the name in TLS too
#
# Each increment is an `invoke` line stamped with `date +%s%N` just before
# curl starts and a completion stamped just after it ends: `ok` with the
# value for a 200 with a number, `fail` for a 409, `info` for anything else
# (a 503, a timeout, a refused connection: curl reports code 000). The
# clock is the wall clock: to merge with kv_client.py's lines, run that
# with --clock realtime. Each client writes its own file, and OUT is them
# concatenated (the checker orders clients by time, not by line).
#
# By hand, one client is this loop:
#
#   for i in $(seq 100); do t0=$(date +%s%N)
#     r=$(curl -sk -m 5 -X POST -w ' %{http_code}' "$URL/incr/k"); t1=$(date +%s%N)
#     echo "$t0 $t1 $r"; done
set -euo pipefail

if [ $# -lt 5 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
url=${1%/} key=$2 ops=$3 clients=$4 out=$5 host=${6:-}
if ! [[ $key =~ ^[A-Za-z0-9_-]+$ ]]; then
  echo "curl_incr.sh: key must be letters, digits, - and _" >&2
  exit 2
fi
extra=()
if [ -n "$host" ]; then extra+=(-H "Host: $host"); fi
# Deliberately split: CURL_ARGS is a list of options.
# shellcheck disable=SC2206
if [ -n "${CURL_ARGS:-}" ]; then extra+=(${CURL_ARGS}); fi

# One client: OPS increments, one at a time, each recorded.
client() {
  local c=$1 file=$2 t0 t1 reply code body type value
  for ((i = 0; i < ops; i++)); do
    t0=$(date +%s%N)
    reply=$(curl -sk --max-time 5 -X POST -w '\n%{http_code}' "${extra[@]}" \
      "$url/incr/$key" || true)
    t1=$(date +%s%N)
    code=${reply##*$'\n'}
    body=${reply%$'\n'*}
    body=${body//[[:space:]]/}
    value=null
    if [ "$code" = 200 ] && [[ $body =~ ^[0-9]+$ ]]; then
      type=ok value=$body
    elif [ "$code" = 409 ]; then
      type=fail
    else
      type=info
    fi
    printf '{"client": "curl-%s", "key": "%s", "op": "incr", "args": 1, "type": "invoke", "t_ns": %s}\n' \
      "$c" "$key" "$t0" >>"$file"
    printf '{"client": "curl-%s", "key": "%s", "op": "incr", "type": "%s", "value": %s, "t_ns": %s, "status": "%s"}\n' \
      "$c" "$key" "$type" "$value" "$t1" "$code" >>"$file"
  done
}

parts=()
for ((c = 0; c < clients; c++)); do
  parts+=("$out.client$c")
  : >"$out.client$c"
  client "$c" "$out.client$c" &
done
wait
cat "${parts[@]}" >"$out"
rm -f "${parts[@]}"
echo "curl_incr.sh: $((ops * clients)) increments recorded in $out" >&2
