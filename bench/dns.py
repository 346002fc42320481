#!/usr/bin/env python3
"""meshfed dns-proxy side by side with dnsmasq and unbound, judged by dnsperf.

Each server answers the same 100 local names (our test bed cluster's Services, which the
federation pushes to meshfed as its NameTable; dnsmasq gets them as --host-record, unbound as
local-data) and forwards everything else to one upstream (dnsmasq). Servers are pinned to core
1 with one thread each; dnsperf and the upstream to core 0. Per server: the highest rate with
under 0.1% of queries lost, its CPU time per query (utime+stime from /proc), and p99 latency at
half that rate. Medians of --rounds. Prints JSON.
"""
import argparse, json, os, re, signal, socket, statistics, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")


def free_ports(n):
    """n distinct ports free for both TCP and UDP (the xDS port is TCP, the DNS ports both);
    all held until every one is chosen."""
    held, ports = [], []
    while len(ports) < n:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        held.append(t)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", t.getsockname()[1]))
        except OSError:
            u.close()
            continue
        held.append(u)
        ports.append(t.getsockname()[1])
    for s in held:
        s.close()
    return ports


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def dig(port, name):
    out = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "-p", str(port), "@127.0.0.1", name],
                         capture_output=True, text=True).stdout
    return out.strip()


class Bed:
    def __init__(self, meshfed, tmp):
        self.meshfed, self.tmp, self.procs, self.logs = meshfed, tmp, [], []

    def start(self, args, core=None, **kw):
        """Starts args; its stderr goes to a log in tmp, shown if a wait times out."""
        log = os.path.join(self.tmp, f"{len(self.procs)}-{os.path.basename(args[0])}.log")
        self.logs.append(log)
        if core is not None:
            args = ["taskset", "-c", str(core)] + args
        with open(log, "w") as err:
            p = subprocess.Popen(args, stdout=kw.get("stdout", subprocess.DEVNULL), stderr=err, text=True)
        self.procs.append(p)
        return p

    def wait(self, what, ok, secs=30):
        deadline = time.time() + secs
        while not ok():
            if time.time() > deadline:
                for log in self.logs:
                    tail = open(log).read().splitlines()[-5:]
                    print(f"--- {log}\n" + "\n".join(tail), file=sys.stderr)
                sys.exit(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def dnsperf(port, queries, secs, qps=None, verbose=False):
    args = ["taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries,
            "-l", str(secs), "-c", "1", "-q", "200", "-t", "1"]
    if qps:
        args += ["-Q", str(int(qps))]
    if verbose:
        args += ["-v"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))
    done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    rate = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    # `> NOERROR name A 0.000071`; a lost query (`> T name A`) has no latency.
    lat = [float(l.rsplit(" ", 1)[1]) for l in out.splitlines()
           if l.startswith("> ") and re.fullmatch(r"[\d.]+", l.rsplit(" ", 1)[1])] if verbose else []
    return sent, done, rate, lat


def measure(port, pid, queries, secs):
    """Highest rate under 0.1% loss (unthrottled first, then 90% steps), CPU per query there."""
    limit = None
    for _ in range(6):
        c0 = cpu_seconds(pid)
        sent, done, rate, _ = dnsperf(port, queries, secs, limit)
        c1 = cpu_seconds(pid)
        if sent and (sent - done) / sent < 0.001:
            return rate, (c1 - c0) / max(done, 1) * 1e6
        limit = rate * 0.9
    return 0.0, 0.0


def p99_at(port, queries, qps):
    _, _, _, lat = dnsperf(port, queries, 3, qps, verbose=True)
    lat.sort()
    return lat[int(len(lat) * 0.99)] * 1e6 if lat else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshfed", default="target/release/meshfed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--services", type=int, default=100)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="meshfed-bench-dns-")
    bed = Bed(a.meshfed, tmp)
    try:
        report = run(bed, a, tmp)
    finally:
        bed.stop()
    print(json.dumps(report, indent=2))


def run(bed, a, tmp):
    kc = os.path.join(tmp, "kubeconfig")
    api = bed.start([a.meshfed, "testbed", "apiserver", "--listen", "127.0.0.1:0", "--cluster-name",
                     "cluster1", "--kubeconfig-out", kc], core=0, stdout=subprocess.PIPE)
    api.stdout.readline()
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}] + [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{i}", "namespace": "bench"},
         "spec": {"ports": [{"port": 80}]}} for i in range(a.services)]
    subprocess.run(["kubectl", "--kubeconfig", kc, "apply", "--validate=false", "-f", "-"], check=True,
                   input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), text=True,
                   capture_output=True)
    xds, up, ours, dm, ub = free_ports(5)
    bed.start([a.meshfed, "federation", "--kubeconfig", kc, "--cluster-id", "cluster1", "--network",
               "network1", "--admin", "127.0.0.1:0", "--xds-listen", f"127.0.0.1:{xds}"], core=0)
    bed.start(["dnsmasq", "-k", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
               "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={up}",
               "--address=/fwd.bench/192.0.2.1"], core=0)
    names = [f"svc{i}.bench.svc.cluster.local" for i in range(a.services)]
    meshfed = bed.start([a.meshfed, "dns-proxy", "--listen", f"127.0.0.1:{ours}", "--xds",
                         f"127.0.0.1:{xds}", "--upstream", f"127.0.0.1:{up}", "--namespace", "bench",
                         "--cluster-id", "cluster1", "--admin", "127.0.0.1:0", "--threads", "1"], core=1)
    bed.wait("meshfed to answer every local name", lambda: all(dig(ours, n) for n in (names[0], names[-1])))
    ips = {n: dig(ours, n) for n in names}
    local = os.path.join(tmp, "local.txt")
    open(local, "w").write("".join(f"{n} A\n" for n in names))
    forwarded = os.path.join(tmp, "forwarded.txt")
    open(forwarded, "w").write("".join(f"q{i}.fwd.bench A\n" for i in range(a.services)))
    dnsmasq = bed.start(["dnsmasq", "-k", "--conf-file=/dev/null", "--pid-file=", "--no-resolv",
                         "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={dm}",
                         f"--server=127.0.0.1#{up}"] + [f"--host-record={n},{ip}" for n, ip in ips.items()],
                        core=1)
    conf = os.path.join(tmp, "unbound.conf")
    open(conf, "w").write(f"""server:
  interface: 127.0.0.1
  port: {ub}
  num-threads: 1
  do-daemonize: no
  use-syslog: no
  chroot: ""
  username: ""
  pidfile: ""
  directory: "{tmp}"
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  do-not-query-localhost: no
""" + "".join(f'  local-data: "{n}. 30 IN A {ip}"\n' for n, ip in ips.items()) + f"""forward-zone:
  name: "."
  forward-addr: 127.0.0.1@{up}
""")
    unbound = bed.start(["unbound", "-d", "-c", conf], core=1)
    servers = {"meshfed": (ours, meshfed.pid), "dnsmasq": (dm, dnsmasq.pid), "unbound": (ub, unbound.pid)}
    for name, (port, _) in servers.items():
        bed.wait(f"{name} to answer", lambda p=port: dig(p, names[0]) == ips[names[0]] and dig(p, "a.fwd.bench"))
    report = {}
    for name, (port, pid) in servers.items():
        runs = {"local": [], "forwarded": []}
        for _ in range(a.rounds):
            for kind, queries in (("local", local), ("forwarded", forwarded)):
                qps, cpu = measure(port, pid, queries, a.secs)
                runs[kind].append((qps, cpu, p99_at(port, queries, qps / 2)))
        report[name] = {kind: {"qps": statistics.median(r[0] for r in rs),
                               "cpu_us_per_query": statistics.median(r[1] for r in rs),
                               "p99_us_at_half": statistics.median(r[2] for r in rs)}
                        for kind, rs in runs.items()}
    report["_meta"] = {"names": a.services, "rounds": a.rounds, "secs": a.secs}
    return report


if __name__ == "__main__":
    main()
