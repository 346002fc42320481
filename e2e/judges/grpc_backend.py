"""A gRPC backend for the xDS judges: answers /helloworld.Greeter/SayHello with its name.

No generated code: a generic handler on raw bytes. Prints "ready PORT" once serving.
Usage: grpc_backend.py ADDR NAME   (ADDR may use port 0)
"""
import sys
from concurrent import futures

import grpc


def main():
    addr, name = sys.argv[1], sys.argv[2].encode()

    def say_hello(request, context):
        return name

    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(addr)
    if port == 0:
        sys.exit(f"cannot bind {addr}")
    server.start()
    print(f"ready {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
