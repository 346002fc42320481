"""A gRPC backend for the xDS judges: answers /helloworld.Greeter/SayHello with its name.

No generated code: a generic handler on raw bytes. Prints "ready PORT" once serving.
Usage: grpc_backend.py ADDR NAME [DELAY]   (ADDR may use port 0; DELAY: seconds each call is
held before the answer, so calls stay in flight, e.g. for circuit breaking)

Knobs can be changed while it serves, one command a line on stdin, each answered with one
JSON line (the backend of a timeout or retry test turns slow or flaky on demand):

  set [delay_ms=D] [fail_every=K] [code=CODE]   hold each call D ms; fail every Kth call
                                                (counted from this command) with CODE
                                                (default UNAVAILABLE); 0 turns a knob off.
                                                {"ok": true, "delay_ms": D, "fail_every": K,
                                                 "code": CODE}
  stats                                         {"calls": n, "failed": f} since the last set
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc


class Knobs:
    """The backend's behaviour, shared by the handler threads and the stdin reader."""

    def __init__(self, delay_s):
        self.lock = threading.Lock()
        self.delay_s = delay_s
        self.fail_every = 0
        self.code = grpc.StatusCode.UNAVAILABLE
        self.calls = 0
        self.failed = 0

    def next_call(self):
        """Counts a call; returns (delay in seconds, the code to fail it with or None)."""
        with self.lock:
            self.calls += 1
            fail = self.fail_every > 0 and self.calls % self.fail_every == 0
            if fail:
                self.failed += 1
            return self.delay_s, (self.code if fail else None)

    def command(self, words):
        with self.lock:
            if words[0] == "set":
                for word in words[1:]:
                    key, _, value = word.partition("=")
                    if key == "delay_ms":
                        self.delay_s = float(value) / 1000.0
                    elif key == "fail_every":
                        self.fail_every = int(value)
                    elif key == "code":
                        self.code = grpc.StatusCode[value]
                    else:
                        return {"error": f"unknown knob {key}"}
                self.calls, self.failed = 0, 0
                return {"ok": True, "delay_ms": self.delay_s * 1000.0,
                        "fail_every": self.fail_every, "code": self.code.name}
            if words[0] == "stats":
                return {"calls": self.calls, "failed": self.failed}
            return {"error": f"unknown command {words[0]}"}


def read_commands(knobs):
    for line in sys.stdin:
        words = line.split()
        if words:
            try:
                answer = knobs.command(words)
            except (KeyError, ValueError) as e:
                answer = {"error": repr(e)}
            print(json.dumps(answer), flush=True)


def main():
    addr, name = sys.argv[1], sys.argv[2].encode()
    knobs = Knobs(float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)

    def say_hello(request, context):
        delay, fail = knobs.next_call()
        if delay:
            time.sleep(delay)
        if fail is not None:
            context.abort(fail, "failed by the backend's fail_every knob")
        return name

    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(addr)
    if port == 0:
        sys.exit(f"cannot bind {addr}")
    server.start()
    print(f"ready {port}", flush=True)
    threading.Thread(target=read_commands, args=(knobs,), daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
