#!/usr/bin/env bash
# bench/outpost/run.sh N: the whole appliance (`outpost run`, embedded NATS,
# the shipped pack, a forwarder to `outpost receive`) fed N syslog lines over
# one loopback TCP connection, octet-counted. Per run it prints
#   ingest_eps    N / (first byte sent -> outpost_bus_published_events_total = N)
#   pipeline_eps  N / (first byte sent -> every event through the rule filter,
#                 every match applied to window state, every raised alert
#                 received as CEF by the receiver)
#   cpu_s         CPU seconds (user + system) `outpost run` used from the first
#                 byte sent to the end of the pipeline: its cost, which this
#                 VM's changing speed moves less than the rates
#   vmhwm_mib     peak resident memory of `outpost run` (VmHWM)
#   data_mib      size of data_dir (JetStream + Badger) at the end
#   alerts        CEF messages received, by rule
# and the medians. Environment: RUNS (3), MIX (sshd|realistic|formats), IPS (1000),
# RATE (loadgen -rate, 1000), PROFILE=DIR to save a CPU profile of PROFILE_SECONDS (10) per run
# (PROFILE_AFTER=S seconds into the run, default 0) and a heap profile after it,
# then, with TRACE_SECONDS, an execution trace of that many seconds (`go tool trace
# -pprof=sync|sched FILE` says where goroutines wait),
# EXTRA (YAML appended to the config, e.g. 'windows: {fused: true}'), OUTPOST_BIN (an
# outpost binary to run instead of one built from this tree: another build,
# measured on the same input).
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
n=${1:-1000000} runs=${RUNS:-3} mix=${MIX:-sshd} ips=${IPS:-1000} rate=${RATE:-1000}
tmp=$(mktemp -d)
pids=()
trap cleanup EXIT # bench/lib.sh: kills pids, removes tmp
if [[ -n ${OUTPOST_BIN:-} ]]; then cp "$OUTPOST_BIN" "$tmp/outpost"; else go build -o "$tmp/outpost" ./cmd/outpost; fi
build_loadgen "$tmp"
gen=(-n "$n" -ips "$ips" -rate "$rate" -mix "$mix")
"$tmp/loadgen" "${gen[@]}" -out "$tmp/lines.txt" -expect 2>&1 | grep -E 'expect|planted' || true
rm -f "$tmp/lines.txt"
ingest=() pipeline=() hwm=() disk=() cpu=()
for run in $(seq "$runs"); do
	dir="$tmp/run$run" && mkdir "$dir"
	syslog=$(free_port) http=$(free_port) recv=$(free_port)
	sed -e "s|@DATA@|$dir/data|; s|@HTTP@|$http|; s|@SYSLOG@|$syslog|; s|@RECV@|$recv|" bench/outpost/outpost.yaml >"$dir/outpost.yaml"
	[[ -z ${EXTRA:-} ]] || echo "$EXTRA" >>"$dir/outpost.yaml"
	"$tmp/outpost" receive --listen "127.0.0.1:$recv" >"$dir/cef.txt" 2>/dev/null &
	pids+=($!)
	"$tmp/outpost" run -c "$dir/outpost.yaml" >"$dir/outpost.log" 2>&1 &
	op=$!
	pids+=("$op")
	wait_until 30 listening "$syslog"
	wait_until 30 listening "$http"
	url="http://127.0.0.1:$http/metrics"
	prof=
	if [[ -n ${PROFILE:-} ]]; then
		mkdir -p "$PROFILE"
		(sleep "${PROFILE_AFTER:-0}" && curl -sf -o "$PROFILE/outpost-$mix-$ips-run$run.cpu.pprof" "http://127.0.0.1:$http/debug/pprof/profile?seconds=${PROFILE_SECONDS:-10}" &&
			curl -sf -o "$PROFILE/outpost-$mix-$ips-run$run.heap.pprof" "http://127.0.0.1:$http/debug/pprof/heap" &&
			if [[ -n ${TRACE_SECONDS:-} ]]; then curl -sf -o "$PROFILE/outpost-$mix-$ips-run$run.trace" "http://127.0.0.1:$http/debug/pprof/trace?seconds=$TRACE_SECONDS"; fi) &
		prof=$!
	fi
	cpu0=$(cpu_seconds "$op")
	"$tmp/loadgen" "${gen[@]}" -tcp "127.0.0.1:$syslog" >"$dir/send.txt"
	published() { (($(metric "$url" outpost_bus_published_events_total) >= n)); }
	drained() {
		(($(metric "$url" outpost_filter_events_total) >= n)) || return 1
		local m w a
		m=$(metric "$url" outpost_filter_matches_total) w=$(metric "$url" outpost_windows_matches_total)
		a=$(metric "$url" outpost_alerts_raised_total)
		((m == w && $(wc -l <"$dir/cef.txt") >= a))
	}
	STEP=0.1 wait_until 600 published
	t_ingest=$(now)
	STEP=0.1 wait_until 600 drained
	t_pipe=$(now)
	cpu+=("$(awk -v a="$cpu0" -v b="$(cpu_seconds "$op")" 'BEGIN { printf "%.2f", b - a }')")
	start=$(began "$dir/send.txt")
	ingest+=("$(rate "$n" "$start" "$t_ingest")") pipeline+=("$(rate "$n" "$start" "$t_pipe")")
	hwm+=("$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$op/status")")
	disk+=("$(du -sm "$dir/data" | cut -f1)")
	[[ -z $prof ]] || wait "$prof" || true
	echo "run $run: ingest_eps=${ingest[-1]} pipeline_eps=${pipeline[-1]} cpu_s=${cpu[-1]} vmhwm_mib=${hwm[-1]} data_mib=${disk[-1]} alerts=$(wc -l <"$dir/cef.txt") ($(cut -d' ' -f2- "$dir/send.txt"))"
	awk -F'|' '{ print $5 }' "$dir/cef.txt" | sort | uniq -c | sed 's/^/    /'
	curl -sf "$url" | awk '
		/^outpost_windows_checkpoint_seconds_(sum|count) / { cp[$1] = $2 }
		/^outpost_windows_checkpoint_states_sum / { st = $2 }
		/^outpost_windows_state_log_compactions_total/ { comp += $2 }
		/^outpost_windows_state_reads_total/ { reads = reads " " $1 "=" $2 }
		END {
			n = cp["outpost_windows_checkpoint_seconds_count"]
			if (n > 0) printf "    windows: %d checkpoints, mean %.0f ms, mean %.0f states; %d compactions;%s\n", n, 1000 * cp["outpost_windows_checkpoint_seconds_sum"] / n, st / n, comp, reads
		}' | sed 's/outpost_windows_state_reads_total{from="\([a-z]*\)"}/reads_\1/g'
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	pids=()
	rm -rf "$dir/data"
done
echo "outpost mix=$mix n=$n ips=$ips runs=$runs median ingest_eps=$(median "${ingest[@]}") pipeline_eps=$(median "${pipeline[@]}") cpu_s=$(median "${cpu[@]}") vmhwm_mib=$(median "${hwm[@]}") data_mib=$(median "${disk[@]}")"
