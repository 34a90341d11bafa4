#!/usr/bin/env bash
# bench/rsyslog/run.sh N: rsyslog (Debian) receiving N RFC 5424 sshd lines
# over one loopback TCP connection, octet-counted, written to a file with
# in-memory queues. Prints msg/s end to end (first byte sent to last line
# in the file) for each run and the median. RUNS (default 3), IPS (1000).
# Runs its own rsyslogd -n with its own config and work dir; never touches
# the system rsyslog.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
n=${1:-1000000} runs=${RUNS:-3} ips=${IPS:-1000}
tmp=$(mktemp -d)
pid=
cleanup() {
	[[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
build_loadgen "$tmp"
"$tmp/loadgen" -n "$n" -ips "$ips" -mix sshd -out "$tmp/lines.txt" 2>/dev/null
want=$(stat -c %s "$tmp/lines.txt") # %rawmsg% + LF: the file ends up byte for byte the same
rates=()
for run in $(seq "$runs"); do
	port=$(free_port)
	mkdir "$tmp/work"
	sed -e "s|@WORK@|$tmp/work|; s|@PORT@|$port|; s|@OUT@|$tmp/out.log|" bench/rsyslog/rsyslog.conf >"$tmp/rsyslog.conf"
	rsyslogd -n -f "$tmp/rsyslog.conf" -i "$tmp/rsyslog.pid" >"$tmp/rsyslogd.log" 2>&1 &
	pid=$!
	wait_until 10 listening "$port"
	"$tmp/loadgen" -n "$n" -ips "$ips" -mix sshd -tcp "127.0.0.1:$port" -timeout 5m >"$tmp/send.txt"
	wait_until 300 size_at_least "$tmp/out.log" "$want"
	end=$(now)
	start=$(began "$tmp/send.txt")
	lines=$(wc -l <"$tmp/out.log")
	r=$(rate "$n" "$start" "$end")
	echo "run $run: rsyslog lines=$lines msg_per_s=$r ($(cat "$tmp/send.txt"))"
	rates+=("$r")
	kill "$pid" && wait "$pid" 2>/dev/null || true
	pid=
	rm -rf "$tmp/work" "$tmp/out.log"
done
echo "rsyslog $(rsyslogd -v | awk 'NR == 1 { print $2 }'): n=$n runs=$runs median_msg_per_s=$(median "${rates[@]}")"
