#!/usr/bin/env bash
# bench/outpost/soak.sh: the whole appliance (`outpost run` as in run.sh:
# embedded NATS, the shipped pack, CEF to `outpost receive`) held at a fixed
# input rate: loadgen -pace sends PACE syslog lines per wall second over one
# loopback TCP connection for DURATION (or N lines, whichever comes first).
# Every SAMPLE seconds, during the load and the drain, one line:
#   t          seconds since loadgen started
#   rss, hwm   VmRSS and VmHWM of `outpost run`, MiB
#   anon       RssAnon, MiB: the Go heap and other private memory; the rest of
#              rss is mostly files mapped by Badger and JetStream
#   data       du -sm of data_dir (JetStream + Badger), MiB
#   published  outpost_bus_published_events_total (ingest: syslog -> EVENTS)
#   filtered   outpost_filter_events_total (events through the rules)
#   wmatches   outpost_windows_matches_total, all verdicts (matches applied)
#   keys       outpost_windows_live_keys
#   alerts     outpost_alerts_raised_total
#   lag        published - filtered: events waiting for the rule filter
#   wlag       outpost_filter_matches_total - matches the windows stage took
#              (applied, dropped at the key cap, or for unknown rules)
# When loadgen ends it waits (at most DRAIN_MAX seconds) until every sent
# line is published and filtered, every match taken by the windows and every
# raised alert received as CEF, and prints drain_s. Then a summary:
#   ingest_eps, filter_eps   published, filtered when loadgen ended / its seconds
#   wmatch_ps                windows matches when loadgen ended / its seconds
#   max_lag, max_wlag        over all samples
#   rss_half_min/max_mib     VmRSS range over the second half of the load (flat?)
#   rss_max_mib, hwm_mib     largest VmRSS sampled, VmHWM at the end
#   data_mib, state_mib      data_dir, and its Badger part, at the end
#   keys_max                 largest live_keys
#   bytes_in, bytes_out      outpost_component_received_bytes_total (syslog,
#                            octet-count framing included), _forwarder_sent_
#                            bytes_total (CEF, framing excluded), and in/out
# and, the first time live keys reach KEYS_MARK (1000000), rss/hwm/data then;
# with RUNS > 1 a last line with medians (a drain that timed out counts as
# DRAIN_MAX).
#
# Environment: PACE (30000 lines/s), DURATION (60s; Ns, Nm or Nh), N (lines;
# default PACE x DURATION), MIX (sshd|realistic), IPS (1000), RATE (loadgen
# -rate: lines per second of *event* time, independent of PACE; 1000 as in
# run.sh, so at PACE 30000 event time runs 30x faster than the wall clock and
# each address's windows hold what run.sh's do; RATE=$PACE makes the clocks
# agree, and then each address sends PACE/IPS lines per event second, which
# the pack's 10m and 30m windows keep), SAMPLE (5 s), RUNS (1), DRAIN_MAX
# (300 s), OUTAGE=1 (the SIEM is down: the destination is a loopback port
# nobody listens on, no `outpost receive`; the drain then does not wait
# for CEF, the alerts stay in ALERTS), MEMORY_LIMIT (e.g. 800MiB:
# memory_limit), MAX_KEYS
# (windows.max_keys_per_rule), LATENCY=1 (event time = send time: loadgen
# -start <the current time> -rate PACE; `outpost receive --stamp`; at the end
# latency_ms p50/p99/max of CEF arrival minus the alert's rt, the time of the
# event that made it fire: receipt to CEF), EXTRA (YAML appended to the config, as in
# run.sh; not together with MAX_KEYS, both write windows:), KEYS_MARK, PROFILE=DIR (heap profiles at half
# and end of the load, a 10 s CPU profile from the half on), OUTPOST_BIN and
# LOADGEN_BIN (prebuilt binaries; default: built from this checkout).
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
pace=${PACE:-30000} duration=${DURATION:-60s} mix=${MIX:-sshd} ips=${IPS:-1000}
rate=${RATE:-1000}
[[ -z ${LATENCY:-} ]] || rate=$pace
sample=${SAMPLE:-5} runs=${RUNS:-1} drain_max=${DRAIN_MAX:-300}
mark=${KEYS_MARK:-1000000}
case $duration in
*s) dur_s=${duration%s} ;;
*m) dur_s=$((${duration%m} * 60)) ;;
*h) dur_s=$((${duration%h} * 3600)) ;;
*) echo "DURATION: want Ns, Nm or Nh, got $duration" >&2 && exit 2 ;;
esac
[[ $dur_s =~ ^[0-9]+$ ]] || { echo "DURATION: want a whole number of s, m or h, got $duration" >&2 && exit 2; }
n=${N:-$(awk -v p="$pace" -v d="$dur_s" 'BEGIN { printf "%.0f", p * d }')}
tmp=$(mktemp -d)
pids=()
trap cleanup EXIT # bench/lib.sh: kills pids, removes tmp
if [[ -n ${OUTPOST_BIN:-} ]]; then op_bin=$OUTPOST_BIN; else
	go build -o "$tmp/outpost" ./cmd/outpost
	op_bin=$tmp/outpost
fi
if [[ -n ${LOADGEN_BIN:-} ]]; then lg_bin=$LOADGEN_BIN; else
	build_loadgen "$tmp"
	lg_bin=$tmp/loadgen
fi

# scrape URL NAME...: the sum of each NAME's samples (all label sets), in
# order, from one scrape.
scrape() {
	local url=$1
	shift
	curl -sf --max-time 5 "$url" | awk -v names="$*" '
		BEGIN { k = split(names, want, " ") }
		!/^#/ { name = $1; sub(/\{.*/, "", name); s[name] += $NF }
		END { for (i = 1; i <= k; i++) printf "%s%.0f", (i > 1 ? " " : ""), s[want[i]]; print "" }'
}
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
status_mib() { mib "$(awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status")"; }
names=(outpost_bus_published_events_total outpost_filter_events_total outpost_windows_matches_total
	outpost_windows_live_keys outpost_alerts_raised_total outpost_filter_matches_total
	outpost_windows_key_cap_hits_total outpost_windows_unknown_rule_matches_total
	outpost_component_received_bytes_total outpost_forwarder_sent_bytes_total)

m_filter=() m_drain=() m_hwm=()
echo "soak: pace=$pace duration=$duration n=$n mix=$mix ips=$ips rate=$rate sample=${sample}s outage=${OUTAGE:-0} memory_limit=${MEMORY_LIMIT:-none} max_keys_per_rule=${MAX_KEYS:-default}"
for run in $(seq "$runs"); do
	dir="$tmp/run$run" && mkdir "$dir"
	syslog=$(free_port) http=$(free_port) recv=$(free_port)
	sed -e "s|@DATA@|$dir/data|; s|@HTTP@|$http|; s|@SYSLOG@|$syslog|; s|@RECV@|$recv|" bench/outpost/outpost.yaml >"$dir/outpost.yaml"
	[[ -z ${MEMORY_LIMIT:-} ]] || echo "memory_limit: $MEMORY_LIMIT" >>"$dir/outpost.yaml"
	[[ -z ${MAX_KEYS:-} ]] || echo "windows: {max_keys_per_rule: $MAX_KEYS}" >>"$dir/outpost.yaml"
	[[ -z ${EXTRA:-} ]] || echo "$EXTRA" >>"$dir/outpost.yaml"
	if [[ -n ${OUTAGE:-} ]]; then
		: >"$dir/cef.txt" # nobody listens on $recv: the SIEM is down
	else
		"$op_bin" receive ${LATENCY:+--stamp} --listen "127.0.0.1:$recv" >"$dir/cef.txt" 2>/dev/null &
		pids+=($!)
	fi
	"$op_bin" run -c "$dir/outpost.yaml" >"$dir/outpost.log" 2>&1 &
	op=$!
	pids+=("$op")
	wait_until 30 listening "$syslog"
	wait_until 30 listening "$http"
	url="http://127.0.0.1:$http/metrics"

	t0=$(now)
	start_arg=()
	[[ -z ${LATENCY:-} ]] || start_arg=(-start "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)")
	"$lg_bin" -pace "$pace" -duration "$duration" -n "$n" -ips "$ips" -rate "$rate" -mix "$mix" "${start_arg[@]}" \
		-tcp "127.0.0.1:$syslog" >"$dir/send.txt" 2>"$dir/send.err" &
	lg=$!
	pids+=("$lg")
	ts=() rss=() lags=() wlags=() keys_max=0 marked= load_s= t_end= sent= drain_s= half_prof=
	# sample_once: one sample line; sets v (the metric values), lag, wlag.
	sample_once() {
		kill -0 "$op" 2>/dev/null || { echo "outpost run exited:" && tail -20 "$dir/outpost.log" && exit 1; }
		local t r h a d
		t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
		read -ra v <<<"$(scrape "$url" "${names[@]}")"
		r=$(status_mib VmRSS "$op") h=$(status_mib VmHWM "$op") a=$(status_mib RssAnon "$op") d=$(du -sm "$dir/data" | cut -f1)
		lag=$((v[0] - v[1])) wlag=$((v[5] - v[2] - v[6] - v[7]))
		ts+=("$t") rss+=("$r") lags+=("$lag") wlags+=("$wlag")
		((v[3] <= keys_max)) || keys_max=${v[3]}
		printf '  t=%6.1f rss=%5d hwm=%5d anon=%5d data=%5d published=%9d filtered=%9d wmatches=%10d keys=%8d alerts=%6d lag=%8d wlag=%8d\n' \
			"$t" "$r" "$h" "$a" "$d" "${v[0]}" "${v[1]}" "${v[2]}" "${v[3]}" "${v[4]}" "$lag" "$wlag"
		if [[ -z $marked ]] && ((v[3] >= mark)); then
			marked="keys_mark_t=$t keys_mark_rss_mib=$r keys_mark_hwm_mib=$h keys_mark_data_mib=$d"
			echo "  live keys ${v[3]} >= $mark at t=$t: VmRSS $r MiB, VmHWM $h MiB, data_dir $d MiB"
		fi
	}
	drained() {
		read -ra v <<<"$(scrape "$url" "${names[@]}")"
		((v[0] >= sent && v[1] >= sent && v[5] <= v[2] + v[6] + v[7])) || return 1
		[[ -n ${OUTAGE:-} ]] || (($(wc -l <"$dir/cef.txt") >= v[4]))
	}
	k=0
	while :; do
		k=$((k + 1))
		next=$(awk -v a="$t0" -v k="$k" -v s="$sample" 'BEGIN { printf "%.3f", a + k * s }')
		# Sleep to the next sample in small steps, noticing loadgen's end.
		while [[ -z $t_end ]] && awk -v n="$next" -v t="$(now)" 'BEGIN { exit !(t < n) }'; do
			kill -0 "$lg" 2>/dev/null || break
			sleep 0.1
		done
		if [[ -z $t_end ]] && ! kill -0 "$lg" 2>/dev/null; then
			wait "$lg" || { echo "loadgen failed:" && cat "$dir/send.err" && exit 1; }
			t_end=$(now)
			sed 's/^/  /' "$dir/send.txt"
			sent=$(sed -n 's/.* lines=\([0-9]*\).*/\1/p' "$dir/send.txt")
			load_s=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' "$dir/send.txt")
			sample_once
			end=("${v[@]}")
			[[ -z ${PROFILE:-} ]] || { mkdir -p "$PROFILE" && curl -sf -o "$PROFILE/soak-$mix-$pace-run$run-end.heap.pprof" "http://127.0.0.1:$http/debug/pprof/heap"; }
			break
		fi
		sample_once
		if [[ -n ${PROFILE:-} && -z $half_prof ]] && awk -v t="${ts[-1]}" -v d="$dur_s" 'BEGIN { exit !(t >= d / 2) }'; then
			mkdir -p "$PROFILE"
			curl -sf -o "$PROFILE/soak-$mix-$pace-run$run-half.heap.pprof" "http://127.0.0.1:$http/debug/pprof/heap"
			curl -sf -o "$PROFILE/soak-$mix-$pace-run$run-half.cpu.pprof" "http://127.0.0.1:$http/debug/pprof/profile?seconds=10" &
			half_prof=$!
			pids+=("$half_prof")
		fi
	done
	[[ -z $half_prof ]] || wait "$half_prof" || true
	# Drain: poll every 0.2 s, a sample line every SAMPLE seconds.
	drain_deadline=$(awk -v a="$t_end" -v m="$drain_max" 'BEGIN { printf "%.3f", a + m }')
	last=$(now) polled=0
	until drained; do
		polled=1
		if ! awk -v d="$drain_deadline" -v t="$(now)" 'BEGIN { exit !(t < d) }'; then
			drain_s=">$drain_max"
			break
		fi
		sleep 0.2
		if awk -v l="$last" -v s="$sample" -v t="$(now)" 'BEGIN { exit !(t - l >= s) }'; then
			sample_once
			last=$(now)
		fi
	done
	if [[ -z $drain_s ]]; then
		drain_s=$(awk -v a="$t_end" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
	fi
	((polled == 0)) || sample_once # else the sample at loadgen's end is the last
	fin=("${v[@]}")
	read -r half_lo half_hi < <(paste -d' ' <(printf '%s\n' "${ts[@]}") <(printf '%s\n' "${rss[@]}") |
		awk -v l="$load_s" '$1 >= l / 2 && $1 <= l + 0.5 { if (lo == "" || $2 < lo) lo = $2; if ($2 > hi) hi = $2 } END { print lo, hi }')
	rss_max=$(printf '%s\n' "${rss[@]}" | sort -g | tail -1)
	ratio=$(awk -v a="${fin[8]}" -v b="${fin[9]}" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "inf" }')
	echo "run $run: pace=$pace sent=$sent load_s=$load_s" \
		"ingest_eps=$(rate "${end[0]}" 0 "$load_s") filter_eps=$(rate "${end[1]}" 0 "$load_s") wmatch_ps=$(rate "${end[2]}" 0 "$load_s")" \
		"max_lag=$(printf '%s\n' "${lags[@]}" | sort -g | tail -1) max_wlag=$(printf '%s\n' "${wlags[@]}" | sort -g | tail -1) drain_s=$drain_s" \
		"rss_half_min_mib=$half_lo rss_half_max_mib=$half_hi rss_max_mib=$rss_max hwm_mib=$(status_mib VmHWM "$op")" \
		"data_mib=$(du -sm "$dir/data" | cut -f1) state_mib=$(du -sm "$dir/data/state" | cut -f1) keys_max=$keys_max alerts=${fin[4]} cef=$(wc -l <"$dir/cef.txt") key_cap_hits=${fin[6]}" \
		"bytes_in=${fin[8]} bytes_out=${fin[9]} in_per_out=$ratio${marked:+ $marked}"
	awk -F'|' '{ print $5 }' "$dir/cef.txt" | sort | uniq -c | sed 's/^/    /'
	if [[ -n ${LATENCY:-} ]]; then
		# receipt (the line's event time, = its send time) to CEF arrival
		awk '{ if (match($0, /[| ]rt=[0-9]+/)) print $1 - substr($0, RSTART + 4, RLENGTH - 4) }' "$dir/cef.txt" | sort -g |
			awk '{ v[NR] = $1 } END { if (NR) printf "  latency_ms n=%d p50=%d p99=%d max=%d\n", NR, v[int(NR * 0.5) + (NR * 0.5 > int(NR * 0.5))], v[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))], v[NR] }'
	fi
	m_filter+=("$(rate "${end[1]}" 0 "$load_s")") m_drain+=("${drain_s#>}") m_hwm+=("$(status_mib VmHWM "$op")")
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	pids=()
	rm -rf "$dir"
done
if ((runs > 1)); then
	echo "soak mix=$mix pace=$pace duration=$duration runs=$runs median filter_eps=$(median "${m_filter[@]}") drain_s=$(median "${m_drain[@]}") hwm_mib=$(median "${m_hwm[@]}")"
fi
