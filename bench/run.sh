#!/usr/bin/env bash
# One command for every benchmark: bench/run.sh [certs|gateway|federation|xds|dns ...]. Writes BENCHMARKS.md sections.
# Each benchmark is pinned with taskset and repeated; medians are reported.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${MESHFED_BENCH_ROUNDS:-5}
OUT=BENCHMARKS.md
suites=("$@"); [ ${#suites[@]} -gt 0 ] || suites=(certs gateway federation xds dns)

machine() {
  echo "- Machine: $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
}

# Replaces the section between <!-- NAME:begin --> and <!-- NAME:end --> in BENCHMARKS.md.
put_section() {
  local name=$1 body=$2
  [ -f "$OUT" ] || printf '# Benchmarks\n\nProduced by `bench/run.sh`; each section says how it was measured.\n' > "$OUT"
  python3 - "$OUT" "$name" "$body" <<'PY'
import sys, re
path, name, body = sys.argv[1:]
text = open(path).read()
block = f"<!-- {name}:begin -->\n{body.rstrip()}\n<!-- {name}:end -->"
pat = re.compile(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->", re.S)
text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
}

# Builds, then runs `bench NAME --json FILE` $ROUNDS times; prints the files written.
bench_rounds() {
  cargo build --release -q --workspace --bins
  local i json=target/bench-$1.json
  for i in $(seq "$ROUNDS"); do
    cargo run --release -q -p meshfed-bench --bin bench -- "$1" --json "$json.$i" >/dev/null || return 1
    echo "$json.$i"
  done
}

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

bench_certs() {
  cargo build --release -q -p meshfed-certs --benches
  local bin; bin=$(ls -t target/release/deps/issue_rate-* | grep -v '\.d$' | head -1)
  local ours; ours=$(MESHFED_BENCH_ROUNDS=$ROUNDS taskset -c 1 "$bin")

  # Peer: what Istio ships (tools/certs Makefile): one openssl run per certificate.
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  ./target/release/meshfed certs root-ca --out "$tmp/root" >/dev/null
  ./target/release/meshfed certs intermediate --root "$tmp/root" --cluster bench --out "$tmp/ca" >/dev/null
  local n=200 rates=() cpus=()
  for _ in $(seq "$ROUNDS"); do
    local t0 c0 t1 c1
    t0=$(date +%s.%N); c0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
    for i in $(seq $n); do
      taskset -c 1 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/k.pem" \
        -subj "/" -addext "subjectAltName=critical,URI:spiffe://cluster.local/ns/sample/sa/sleep" 2>/dev/null |
      taskset -c 1 openssl x509 -req -CA "$tmp/ca/ca-cert.pem" -CAkey "$tmp/ca/ca-key.pem" -days 1 \
        -copy_extensions copy -out "$tmp/c.pem" 2>/dev/null
    done
    t1=$(date +%s.%N); c1=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
    rates+=("$(echo "$n / ($t1 - $t0)" | bc -l)")
    cpus+=("$(echo "($c1 - $c0) * 10000 / $n" | bc -l)")
  done
  local peer_rate peer_cpu
  peer_rate=$(printf '%s\n' "${rates[@]}" | median); peer_cpu=$(printf '%s\n' "${cpus[@]}" | median)
  local raw; raw=$(taskset -c 1 openssl speed -seconds 2 ecdsap256 2>/dev/null | awk '/256 bits ecdsa/{print $(NF-1); exit}')

  local ours_rate; ours_rate=$(echo "$ours" | head -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  local body
  body=$(cat <<MD
## certs: leaf certificates per second (ECDSA P-256, one core)

$(machine)
- Command: \`bench/run.sh certs\` (our figure: \`cargo bench -p meshfed-certs --bench issue_rate\`, pinned with \`taskset -c 1\`; median of $ROUNDS rounds of 3000)
- Goal: at least 5,000 leaf certificates per second on one core.

| what | certificates/s | CPU µs per certificate |
|---|---:|---:|
$ours
| peer: openssl CLI per certificate, as Istio's \`tools/certs\` Makefile does (median of $ROUNDS×$n) | $(printf '%.0f' "$peer_rate") | $(printf '%.0f' "$peer_cpu") |
| reference: \`openssl speed ecdsap256\` raw signatures/s (no key generation, no encoding) | $raw | |

Ratio, library issuance to the openssl CLI workflow: $(printf '%.0f' "$(echo "$ours_rate / $peer_rate" | bc -l)")×.
MD
)
  put_section certs "$body"
  echo "$body"
}

bench_gateway() {
  cargo build --release -q --workspace --bins
  local json=target/bench-gateway.json
  cargo run --release -q -p meshfed-bench --bin bench -- gateway --json "$json" --rounds "$ROUNDS" --secs 2 --idle 10000 >/dev/null
  local table
  table=$(python3 - "$json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
hp, direct = d["haproxy"], d["direct"]
order = ["direct", "meshfed", "meshfed-buffered", "haproxy", "nginx", "sniproxy"]
rows = ["| proxy | Gbit/s 1 stream | Gbit/s 8 streams | conn/s | p50 µs | p99 µs | CPU µs/conn | CPU s/GB | RSS KiB/idle conn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for k in order:
    v = d[k]
    rows.append(f"| {k} | {v['gbps']} | {v['gbps_8']} | {v['conn_per_s']:.0f} | {v['p50_us']:.0f} | {v['p99_us']:.0f} | {v.get('cpu_us_per_conn','–')} | {v.get('cpu_s_per_gb','–')} | {v.get('rss_kib_per_conn','–')} |")
m = d["meshfed"]
def r(a, b): return f"{a / b:.2f}×" if b else "n/a"
rows.append("")
rows.append("meshfed (splice) against the goals:")
rows.append(f"- conn/s vs HAProxy: {r(m['conn_per_s'], hp['conn_per_s'])} (goal ≥ 1.25×); CPU per connection vs HAProxy: {r(m['cpu_us_per_conn'], hp['cpu_us_per_conn'])} (lower is better)")
rows.append(f"- Gbit/s vs HAProxy: {r(m['gbps'], hp['gbps'])} (1 stream), {r(m['gbps_8'], hp['gbps_8'])} (8 streams) (goal ≥ 1×); vs direct: {r(m['gbps'], direct['gbps'])}, {r(m['gbps_8'], direct['gbps_8'])} (goal ≥ 0.8×)")
rows.append(f"- CPU per GB vs HAProxy: {r(m['cpu_s_per_gb'], hp['cpu_s_per_gb'])}; vs nginx: {r(m['cpu_s_per_gb'], d['nginx']['cpu_s_per_gb'])}")
rows.append(f"- p99 vs HAProxy: {m['p99_us']:.0f} µs vs {hp['p99_us']:.0f} µs (goal: no worse); idle memory: {m['rss_kib_per_conn']} KiB per connection (goal ≤ 16)")
meta = d["_meta"]
rows.append("")
rows.append(f"Idle connections measured: {meta['idle_connections']} (this machine caps open files at {meta['open_file_limit']} per process, and each proxied connection holds two). Latency at {meta['latency_rate_per_s']} new connections/s; connection rate with {meta['workers']} clients.")
print("\n".join(rows))
PY
)
  local body
  body=$(cat <<MD
## gateway: SNI routing side by side with HAProxy, nginx and sniproxy

$(machine)
- Command: \`bench/run.sh gateway\` (runs \`cargo run --release -p meshfed-bench --bin bench -- gateway --json target/bench-gateway.json\`); median of $ROUNDS rounds of 2 s per figure.
- Setup: loopback; the load generator and the backend (one thread) pinned to core 0, each proxy pinned to core 1 with one worker (HAProxy \`nbthread 1\` \`mode tcp\` + \`req.ssl_sni\`, nginx \`stream\` + \`ssl_preread\` with one worker, sniproxy, meshfed single-threaded). The order of the proxies (and direct) rotates each round, since each phase leaves tens of thousands of TIME_WAIT sockets towards the backend for the next to step over. A connection is: connect, send a ClientHello, read the first byte back, close. CPU is the proxy's utime+stime from /proc over each phase.
- With two cores the load generator's core caps the connection rate for every proxy alike; CPU per connection and per GB are the figures that compare the proxies themselves.

$table
MD
)
  put_section gateway "$body"
  echo "$body"
}

bench_federation() {
  local runs
  mapfile -t runs < <(bench_rounds federation)
  [ ${#runs[@]} -eq "$ROUNDS" ] || { echo "bench federation failed" >&2; exit 1; }
  local table
  table=$(python3 - "${runs[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
med = lambda xs: sorted(xs)[len(xs) // 2]
p = {k: med([r["propagation"][k] for r in runs]) for k in ("p50_ms", "p99_ms", "max_ms")}
s = {k: med([r["scale"][k] for r in runs]) for k in ("first_sync_s", "rss_mib")}
sc = runs[0]["scale"]
print("| figure | median | goal |")
print("|---|---:|---|")
print(f"| remote endpoint change to registry, p50 ({runs[0]['propagation']['changes']} changes) | {p['p50_ms']:.2f} ms | |")
print(f"| remote endpoint change to registry, p99 | {p['p99_ms']:.2f} ms | under 50 ms |")
print(f"| remote endpoint change to registry, max | {p['max_ms']:.2f} ms | |")
print(f"| first full sync, {sc['clusters']} clusters x {sc['services_per_cluster']} services x {sc['endpoints_per_service']} endpoints ({sc['endpoints']} endpoints, as many pods) | {s['first_sync_s']:.2f} s | under 5 s |")
print(f"| federation process RSS after that sync | {s['rss_mib']:.1f} MiB | under 300 MiB |")
PY
)
  local body
  body=$(cat <<MD
## federation: propagation and first sync

$(machine)
- Command: \`bench/run.sh federation\` (runs \`cargo run --release -p meshfed-bench --bin bench -- federation --json FILE\` $ROUNDS times; medians).
- Propagation: two test bed API servers and the controller in one process; each change patches a remote EndpointSlice and is timed until the merged registry shows it.
- Scale: three test bed API servers seeded in-process; a separate \`meshfed federation\` process is timed from start until \`/debug/clusterz\` shows every cluster synced with every endpoint, then its RSS is read from /proc.

$table
MD
)
  put_section federation "$body"
  echo "$body"
}

bench_xds() {
  local runs
  mapfile -t runs < <(bench_rounds xds)
  [ ${#runs[@]} -eq "$ROUNDS" ] || { echo "bench xds failed" >&2; exit 1; }
  local table
  table=$(python3 - "${runs[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
med = lambda xs: sorted(xs)[len(xs) // 2]
keys = ("p50_ms", "p99_ms", "max_ms", "cpu_ms_per_change", "kib_per_change", "bytes_per_client_per_change")
m = {mode: {k: med([r[mode][k] for r in runs]) for k in keys} for mode in ("delta", "sotw")}
d, s = m["delta"], m["sotw"]
r0 = runs[0]["delta"]
print("| figure | delta | state of the world | delta / sotw | goal |")
print("|---|---:|---:|---:|---|")
print(f"| change to all {r0['clients']} clients, p50 | {d['p50_ms']:.1f} ms | {s['p50_ms']:.1f} ms | {d['p50_ms']/s['p50_ms']:.2f}x | |")
print(f"| change to all {r0['clients']} clients, p99 | {d['p99_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {d['p99_ms']/s['p99_ms']:.2f}x | delta under 100 ms |")
print(f"| slowest client | {d['max_ms']:.1f} ms | {s['max_ms']:.1f} ms | | |")
print(f"| federation CPU per change (all clients) | {d['cpu_ms_per_change']:.1f} ms | {s['cpu_ms_per_change']:.1f} ms | {d['cpu_ms_per_change']/s['cpu_ms_per_change']:.2f}x | |")
print(f"| bytes per change (all clients) | {d['kib_per_change']:.0f} KiB | {s['kib_per_change']:.0f} KiB | {d['kib_per_change']/s['kib_per_change']:.3f}x | |")
print(f"| bytes per client per change | {d['bytes_per_client_per_change']:.0f} B | {s['bytes_per_client_per_change']:.0f} B | | |")
PY
)
  local body
  body=$(cat <<MD
## xds: a remote endpoint change reaching 1,000 clients

$(machine)
- Command: \`bench/run.sh xds\` (runs \`cargo run --release -p meshfed-bench --bin bench -- xds --json FILE\` $ROUNDS times; medians).
- Setup: two test bed API servers (100 services x 10 endpoints each, cluster2 on another network behind its east-west gateway) and 1,000 ADS clients, each on its own gRPC connection, in the bench process on core 0; a \`meshfed federation\` process pinned to core 1 (push debounce 5 ms). Each change rewrites one EndpointSlice in cluster2 (its endpoint count alternates, so the weight of the gateway endpoint standing for it changes); a client's latency runs from that write to its receiving the new assignment. Clients subscribe to every cluster and every assignment (delta: \`*\`; state of the world: all names) and ACK every response. CPU is the federation process's utime+stime over the changes.
- Istio's own floor for comparison: a 100 ms push debounce (\`PILOT_DEBOUNCE_AFTER\`), about 1 s typical.

$table
MD
)
  put_section xds "$body"
  echo "$body"
}

bench_dns() {
  cargo build --release -q --workspace --bins
  local pkgs=() c
  for c in dnsperf:dnsperf dnsmasq:dnsmasq-base unbound:unbound dig:bind9-dnsutils; do
    command -v "${c%%:*}" >/dev/null || pkgs+=("${c#*:}")
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  local json=target/bench-dns.json
  python3 bench/dns.py --rounds "$ROUNDS" --secs 4 > "$json"
  local table
  table=$(python3 - "$json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = ["| server | local QPS | local CPU µs/query | local p99 µs at half load | forwarded QPS | forwarded CPU µs/query | forwarded p99 µs at half load |",
        "|---|---:|---:|---:|---:|---:|---:|"]
for k in ("meshfed", "unbound", "dnsmasq"):
    l, f = d[k]["local"], d[k]["forwarded"]
    rows.append(f"| {k} | {l['qps']:.0f} | {l['cpu_us_per_query']:.2f} | {l['p99_us_at_half']:.0f} | {f['qps']:.0f} | {f['cpu_us_per_query']:.2f} | {f['p99_us_at_half']:.0f} |")
m, u, q = d["meshfed"]["local"], d["unbound"]["local"], d["dnsmasq"]["local"]
rows.append("")
rows.append("meshfed against the goals (local answers):")
rows.append(f"- QPS vs unbound: {m['qps'] / u['qps']:.2f}× (goal ≥ 1.0×); vs dnsmasq: {m['qps'] / q['qps']:.2f}× (goal ≥ 2×)")
rows.append(f"- CPU per query vs unbound: {m['cpu_us_per_query'] / u['cpu_us_per_query']:.2f}×; vs dnsmasq: {m['cpu_us_per_query'] / q['cpu_us_per_query']:.2f}× (lower is better)")
print("\n".join(rows))
PY
)
  local body
  body=$(cat <<MD
## dns: the DNS proxy side by side with unbound and dnsmasq, judged by dnsperf

$(machine)
- Command: \`bench/run.sh dns\` (runs \`python3 bench/dns.py --rounds $ROUNDS --secs 4\`); medians of $ROUNDS rounds.
- Setup: a test bed API server with 100 Services and \`meshfed federation\` push the NameTable to \`meshfed dns-proxy --threads 1\`; dnsmasq gets the same 100 names as \`--host-record\`, unbound as \`local-data\`. Each forwards other names to one upstream (dnsmasq, core 0). The three servers run pinned to core 1; dnsperf (one client, at most 200 queries outstanding) runs pinned to core 0. QPS is the highest rate with under 0.1% of queries lost; CPU is the server's utime+stime from /proc over that run, per answered query; p99 comes from \`dnsperf -v\` at half that rate.
- Forwarded queries cycle through 100 names: unbound and dnsmasq answer them from their caches after the first pass, meshfed relays every one (it keeps no cache of upstream answers, as Istio's DNS proxy). Its own local answers are kept encoded per question, as every server here keeps its local data ready.
- dnsperf's core is saturated in the local runs: QPS there is capped by the load generator for every server alike; CPU per query compares the servers themselves.

$table
MD
)
  put_section dns "$body"
  echo "$body"
}

command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }
command -v bc >/dev/null || { echo "bc is required: apt-get install bc" >&2; exit 1; }
for s in "${suites[@]}"; do "bench_$s"; done
