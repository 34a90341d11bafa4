#!/usr/bin/env bash
# bench/engine/run.sh N IPS: the rule engine alone. `outpost rules replay
# --rule ssh-brute-force --format json` over the same N sshd failed-password
# lines from IPS addresses that bench/sec/run.sh gives SEC: the syslog
# parser, the rule's condition and the window logic, in event time, no bus,
# no Badger. Prints lines/s and alerts per run and the median, then runs SEC
# once over the same file and compares the sets of alerted addresses.
# RUNS (default 3), RATE (loadgen -rate, default 1000).
#
# lines_per_s is N / (process start to exit), as bench/sec/run.sh times
# SEC; engine_lines_per_s is what replay reports (input opened to output
# flushed). With GNU time (/usr/bin/time), cpu_s (user + system: how much
# of the cores it needed, which other load on the machine disturbs less
# than wall time) and maxrss_mib too.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
n=${1:-1000000} ips=${2:-1000} runs=${RUNS:-3} rate=${RATE:-1000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build_loadgen "$tmp"
go build -o "$tmp/outpost" ./cmd/outpost
"$tmp/loadgen" -n "$n" -ips "$ips" -rate "$rate" -mix sshd -out "$tmp/lines.txt" -expect 2>&1 | grep expect

gnutime=()
[[ -x /usr/bin/time ]] && gnutime=(/usr/bin/time -o "$tmp/time.txt" -f "cpu_s=%U+%S maxrss_kib=%M")
rates=()
for run in $(seq "$runs"); do
	start=$(now)
	timeout 30m "${gnutime[@]}" "$tmp/outpost" rules replay --rule ssh-brute-force --format json --input "$tmp/lines.txt" \
		>"$tmp/alerts.json" 2>"$tmp/report.txt"
	end=$(now)
	usage=""
	if [[ -s $tmp/time.txt ]]; then
		usage=$(awk '{ split($1, c, /[=+]/); split($2, m, "="); printf " cpu_s=%.2f maxrss_mib=%.0f", c[2] + c[3], m[2] / 1024 }' "$tmp/time.txt")
	fi
	r=$(rate "$n" "$start" "$end")
	engine=$(sed -n 's/^replay: .* lines_per_s=\([0-9]*\).*/\1/p' "$tmp/report.txt")
	alerts=$(wc -l <"$tmp/alerts.json")
	echo "run $run: outpost replay lines=$n ips=$ips rate=$rate seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') lines_per_s=$r engine_lines_per_s=$engine alerts=$alerts$usage"
	rates+=("$r")
done
med=$(median "${rates[@]}")
echo "outpost replay: n=$n ips=$ips rate=$rate runs=$runs median_lines_per_s=$med alerts=$alerts"

# SEC once, as bench/sec/run.sh runs it, on the same file.
sed "s|@ALERTS@|$tmp/sec-alerts.txt|" bench/sec/ssh-brute-force.sec >"$tmp/rule.sec"
start=$(now)
timeout 30m sec --conf="$tmp/rule.sec" --input="$tmp/lines.txt" --notail --log=/dev/null
end=$(now)
sec_rate=$(rate "$n" "$start" "$end")
sec_alerts=$(wc -l <"$tmp/sec-alerts.txt" 2>/dev/null || echo 0)
echo "sec $(sec --version | awk 'NR == 1 { print $NF }'): n=$n ips=$ips rate=$rate seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') lines_per_s=$sec_rate alerts=$sec_alerts"
echo "ratio: outpost_median/sec=$(awk -v a="$med" -v b="$sec_rate" 'BEGIN { printf "%.1f", a / b }')"

# The alerted addresses: SEC writes "ssh-brute-force src_ip=ADDR", replay's
# alerts carry "key":"src_ip=ADDR".
sed -n 's/^ssh-brute-force src_ip=//p' "$tmp/sec-alerts.txt" 2>/dev/null | sort -u >"$tmp/sec.ips" || true
sed -n 's/.*"key":"src_ip=\([^"]*\)".*/\1/p' "$tmp/alerts.json" | sort -u >"$tmp/outpost.ips"
only_outpost=$(comm -23 "$tmp/outpost.ips" "$tmp/sec.ips" | wc -l)
only_sec=$(comm -13 "$tmp/outpost.ips" "$tmp/sec.ips" | wc -l)
same=no
((only_outpost == 0 && only_sec == 0)) && same=yes
echo "alerted addresses: outpost=$(wc -l <"$tmp/outpost.ips") sec=$(wc -l <"$tmp/sec.ips") same_alerts=$same only_in_outpost=$only_outpost only_in_sec=$only_sec"
