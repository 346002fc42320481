"""A gRPC backend for the xDS judges: answers /helloworld.Greeter/SayHello with its name.

No generated code: a generic handler on raw bytes. Prints "ready PORT" once serving.
Usage: grpc_backend.py ADDR NAME [DELAY]   (ADDR may use port 0; DELAY: seconds each call is
held before the answer, so calls stay in flight, e.g. for circuit breaking)
"""
import sys
import time
from concurrent import futures

import grpc


def main():
    addr, name = sys.argv[1], sys.argv[2].encode()
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

    def say_hello(request, context):
        time.sleep(delay)
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
    server.wait_for_termination()


if __name__ == "__main__":
    main()
