# Helpers sourced by bench/*/run.sh. Every wait is bounded.

# cleanup, for `trap cleanup EXIT`: kills the script's background processes
# (the array pids) and removes its temp dir ($tmp).
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# median prints the median of its numeric arguments.
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# wait_until SECONDS CMD...: runs CMD every STEP seconds (default 0.02)
# until it succeeds; fails after SECONDS.
wait_until() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		(($(date +%s) < deadline)) || return 1
		sleep "${STEP:-0.02}"
	done
}

# listening PORT: something listens on 127.0.0.1:PORT.
listening() { ss -Hltn "sport = :$1" | grep -q .; }

# size_at_least FILE BYTES: FILE exists and holds at least BYTES.
size_at_least() { [[ -f $1 ]] && (($(stat -c %s "$1") >= $2)); }

now() { date +%s.%N; }

# rate N START END prints N/(END-START), rounded.
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f\n", n / (b - a) }'; }

# began FILE prints the began= time from loadgen's report in FILE.
began() { sed -n 's/.* began=\([0-9.]*\).*/\1/p' "$1"; }

build_loadgen() { go build -o "$1/loadgen" ./bench/loadgen; }

# metric URL NAME prints the sum of NAME's samples (all label sets) at URL.
metric() {
	curl -sf "$1" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}

# cpu_seconds PID: CPU time (user + system) the process has used, in seconds.
cpu_seconds() {
	awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / tck }' "/proc/$1/stat"
}
