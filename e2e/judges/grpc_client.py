"""gRPC's proxyless xDS client (grpcio) as a judge: resolves xds:///TARGET through the
bootstrap in $GRPC_XDS_BOOTSTRAP and obeys commands on stdin, one JSON line out per command.

Usage: grpc_client.py TARGET [--fail-fast] [--xds-creds]
The first line is {"ready": backend}, or {"error": CODE, "details": text} (then it exits) when
the first call fails. That call waits for xDS to resolve the target (wait_for_ready, 30 s);
with --fail-fast it does not, so a channel whose xDS server refused it fails at once with
the resolver's error. --xds-creds: gRPC's xDS channel credentials (gRFC A29; plaintext
fallback), so clusters' UpstreamTlsContext and the bootstrap's certificate providers apply.
Commands:

  count N                  N calls; {"counts": {backend: n}, "errors": e}
  until NAME N SECONDS     call until N calls in a row reach NAME;
                           {"ok": bool, "calls": c, "seconds": s, "counts": {...}}
  concurrent N             N calls started at once (10 s deadline);
                           {"counts": {outcome: n}, "seconds": {outcome: slowest}}
"""
import collections
import json
import sys
import time

import grpc
import grpc.experimental


def call(stub):
    try:
        return stub(b"hi", timeout=2).decode()
    except grpc.RpcError as e:
        return "error:" + e.code().name


def concurrent(stub, n):
    """Starts n calls together and waits for all: how many had each outcome, and how long
    the slowest call of each outcome took (a circuit breaker's drops come back at once)."""
    start = time.monotonic()
    done = {}

    def finished(f):
        done[id(f)] = time.monotonic() - start

    calls = [stub.future(b"hi", timeout=10) for _ in range(n)]
    for f in calls:
        f.add_done_callback(finished)
    counts, seconds = collections.Counter(), {}
    for f in calls:
        try:
            got = f.result().decode()
        except grpc.RpcError as e:
            got = "error:" + e.code().name
        counts[got] += 1
        took = done.get(id(f), time.monotonic() - start)
        seconds[got] = max(seconds.get(got, 0.0), took)
    return {"counts": counts, "seconds": seconds}


def main():
    target = sys.argv[1]
    fail_fast = "--fail-fast" in sys.argv[2:]
    if "--xds-creds" in sys.argv[2:]:
        creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    stub = channel.unary_unary("/helloworld.Greeter/SayHello")
    try:
        first = stub(b"hi", timeout=10 if fail_fast else 30,
                     wait_for_ready=not fail_fast).decode()
    except grpc.RpcError as e:
        print(json.dumps({"error": e.code().name, "details": e.details()}), flush=True)
        sys.exit(1)
    print(json.dumps({"ready": first}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "count":
            counts = collections.Counter(call(stub) for _ in range(int(words[1])))
            errors = sum(v for k, v in counts.items() if k.startswith("error:"))
            print(json.dumps({"counts": counts, "errors": errors}), flush=True)
        elif words[0] == "until":
            name, run, limit = words[1], int(words[2]), float(words[3])
            start, calls, streak = time.monotonic(), 0, 0
            counts = collections.Counter()
            while streak < run and time.monotonic() - start < limit:
                got = call(stub)
                calls += 1
                counts[got] += 1
                streak = streak + 1 if got == name else 0
            print(json.dumps({"ok": streak >= run, "calls": calls,
                              "seconds": time.monotonic() - start, "counts": counts}), flush=True)
        elif words[0] == "concurrent":
            print(json.dumps(concurrent(stub, int(words[1]))), flush=True)


if __name__ == "__main__":
    main()
