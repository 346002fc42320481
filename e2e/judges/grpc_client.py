"""gRPC's proxyless xDS client (grpcio) as a judge: resolves xds:///TARGET through the
bootstrap in $GRPC_XDS_BOOTSTRAP and obeys commands on stdin, one JSON line out per command.

Usage: grpc_client.py TARGET [--fail-fast] [--xds-creds]
The first line is {"ready": backend}, or {"error": CODE, "details": text} (then it exits) when
the first call fails. That call waits for xDS to resolve the target (wait_for_ready, 30 s);
with --fail-fast it does not, so a channel whose xDS server refused it fails at once with
the resolver's error. --xds-creds: gRPC's xDS channel credentials (gRFC A29; plaintext
fallback), so clusters' UpstreamTlsContext and the bootstrap's certificate providers apply.
Commands (an outcome is the backend's name or "error:CODE"; k=v words are metadata sent
with each call, except deadline=S, the call's deadline in seconds, 2 by default):

  count N [k=v ...]        N calls one after another; {"counts": {outcome: n}, "errors": e,
                           "ms": {"min": .., "p50": .., "max": ..},
                           "ms_by": {outcome: {"min": .., "p50": .., "max": ..}}}
  until NAME N SECONDS [k=v ...]
                           call until N calls in a row have outcome NAME;
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


def options(words):
    """The metadata and deadline of k=v words (metadata keys are lower case on the wire)."""
    metadata, deadline = [], 2.0
    for word in words:
        key, _, value = word.partition("=")
        if key == "deadline":
            deadline = float(value)
        else:
            metadata.append((key.lower(), value))
    return metadata, deadline


def call(stub, metadata=(), deadline=2.0):
    try:
        return stub(b"hi", timeout=deadline, metadata=metadata).decode()
    except grpc.RpcError as e:
        return "error:" + e.code().name


def spread(ms):
    ms = sorted(ms)
    if not ms:
        return {}
    return {"min": ms[0], "p50": ms[len(ms) // 2], "max": ms[-1]}


def count(stub, n, words):
    """n calls in a row: each outcome's count, and how long the calls took (milliseconds)."""
    metadata, deadline = options(words)
    counts, took = collections.Counter(), collections.defaultdict(list)
    for _ in range(n):
        start = time.monotonic()
        got = call(stub, metadata, deadline)
        counts[got] += 1
        took[got].append((time.monotonic() - start) * 1000.0)
    errors = sum(v for k, v in counts.items() if k.startswith("error:"))
    return {"counts": counts, "errors": errors,
            "ms": spread([t for ts in took.values() for t in ts]),
            "ms_by": {k: spread(v) for k, v in took.items()}}


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
            print(json.dumps(count(stub, int(words[1]), words[2:])), flush=True)
        elif words[0] == "until":
            name, run, limit = words[1], int(words[2]), float(words[3])
            metadata, deadline = options(words[4:])
            start, calls, streak = time.monotonic(), 0, 0
            counts = collections.Counter()
            while streak < run and time.monotonic() - start < limit:
                got = call(stub, metadata, deadline)
                calls += 1
                counts[got] += 1
                streak = streak + 1 if got == name else 0
            print(json.dumps({"ok": streak >= run, "calls": calls,
                              "seconds": time.monotonic() - start, "counts": counts}), flush=True)
        elif words[0] == "concurrent":
            print(json.dumps(concurrent(stub, int(words[1]))), flush=True)


if __name__ == "__main__":
    main()
