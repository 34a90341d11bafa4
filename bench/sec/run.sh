#!/usr/bin/env bash
# bench/sec/run.sh N IPS: SEC (Debian) with bench/sec/ssh-brute-force.sec
# over N sshd failed-password lines from IPS addresses, the same lines
# `loadgen -mix sshd` sends to Outpost. Prints lines/s and alerts per run and
# the median. RUNS (default 3), RATE (loadgen -rate, default 1000).
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
n=${1:-1000000} ips=${2:-1000} runs=${RUNS:-3} rate=${RATE:-1000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build_loadgen "$tmp"
"$tmp/loadgen" -n "$n" -ips "$ips" -rate "$rate" -mix sshd -out "$tmp/lines.txt" -expect 2>&1 | grep expect
sed "s|@ALERTS@|$tmp/alerts.txt|" bench/sec/ssh-brute-force.sec >"$tmp/rule.sec"
rates=()
for run in $(seq "$runs"); do
	rm -f "$tmp/alerts.txt"
	start=$(now)
	timeout 30m sec --conf="$tmp/rule.sec" --input="$tmp/lines.txt" --notail --log=/dev/null
	end=$(now)
	r=$(rate "$n" "$start" "$end")
	alerts=$(wc -l <"$tmp/alerts.txt" 2>/dev/null || echo 0)
	echo "run $run: sec lines=$n ips=$ips seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') lines_per_s=$r alerts=$alerts"
	rates+=("$r")
done
echo "sec $(sec --version | awk 'NR == 1 { print $NF }'): n=$n ips=$ips runs=$runs median_lines_per_s=$(median "${rates[@]}") alerts=$alerts"
