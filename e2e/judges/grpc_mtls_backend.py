"""A gRPC backend behind a sidecar-less mTLS port, as a proxyless gRPC server in the mesh:
terminates TLS with its own workload certificate and requires a client certificate from
the mesh root (grpcio ssl_server_credentials, require_client_auth). Answers
/helloworld.Greeter/SayHello with its name.

Usage: grpc_mtls_backend.py ADDR NAME CERT_DIR   (ADDR may use port 0; CERT_DIR holds
cert-chain.pem, key.pem and root-cert.pem, the agent's --output-dir layout)
Prints "ready PORT" once serving, then one JSON line per call:
{"peer": "ipv4:ADDR:PORT", "spiffe": [URI SANs of the client certificate], "security": TYPE}
"""
import json
import os
import sys
from concurrent import futures

import grpc


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def main():
    addr, name, certs = sys.argv[1], sys.argv[2].encode(), sys.argv[3]

    def say_hello(request, context):
        auth = context.auth_context()
        sans = [v.decode() for v in auth.get("x509_subject_alternative_name", [])]
        kind = [v.decode() for v in auth.get("transport_security_type", [])]
        print(json.dumps({"peer": context.peer(),
                          "spiffe": [s for s in sans if s.startswith("spiffe://")],
                          "security": kind}), flush=True)
        return name

    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)},
    )
    creds = grpc.ssl_server_credentials(
        [(read(certs, "key.pem"), read(certs, "cert-chain.pem"))],
        root_certificates=read(certs, "root-cert.pem"),
        require_client_auth=True,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port(addr, creds)
    if port == 0:
        sys.exit(f"cannot bind {addr}")
    server.start()
    print(f"ready {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
