"""Istio's CA as a client we did not write sees it: stubs generated from proto/ca.proto by
grpcio-tools, a key and a PKCS#10 request made by `cryptography`, and
IstioCertificateService/CreateCertificate called over grpcio's TLS, verifying the server
against the shared root under the name Istio's agents dial (CA_ADDR istiod.istio-system.svc).

  ca_client.py HOST:PORT ROOT_PEM [SERVER_NAME]

Prints {"ready": true} once the stubs are built, then obeys one JSON command per stdin line:

  {"uris": [...], "dns": [...], "token": "...", "validity": SECONDS, "key": "rsa2048",
   "csr": "raw text to send instead of a CSR", "tamper": true, "mtls": true}

The key is P-256 unless `key` asks for RSA-2048 (Istio's agent's default). `tamper` flips a
bit of the request's signature (a CSR whose proof of possession fails); `mtls` presents the
last certificate issued (leaf and intermediate) and its key in the TLS handshake, as Istio's
agent does when it renews. Each command's answer is one JSON line:

  {"ok": true, "chain": [PEM, ...], "key_matches": bool, "uris": [...], "dns": [...],
   "lifetime_s": notAfter - notBefore of the leaf}
  {"ok": false, "code": "PERMISSION_DENIED", "details": "..."}
"""
import importlib
import importlib.resources
import json
import os
import sys
import tempfile

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_tools import protoc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "proto")


def stubs():
    """ca_pb2 and ca_pb2_grpc, generated now from our proto (Istio's package and names)."""
    out = tempfile.mkdtemp(prefix="ca-stubs-")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main(["grpc_tools.protoc", "-I", PROTO_DIR, "-I", well_known,
                      "--python_out=" + out, "--grpc_python_out=" + out, "ca.proto"])
    if rc != 0:
        sys.exit("grpc_tools.protoc failed on ca.proto: %d" % rc)
    sys.path.insert(0, out)
    return importlib.import_module("ca_pb2"), importlib.import_module("ca_pb2_grpc")


def request_pem(key, uris, dns, tamper):
    """A PKCS#10 request with exactly the SANs asked for, signed by `key`."""
    names = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    if not tamper:
        return csr.public_bytes(serialization.Encoding.PEM).decode()
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    # The signature BIT STRING ends the request: flipping its last bit breaks only it.
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


def spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def issued(chain, key):
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        uris, dns = [], []
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    return {"ok": True, "chain": chain, "key_matches": spki(leaf.public_key()) == spki(key.public_key()),
            "uris": uris, "dns": dns, "lifetime_s": int(lifetime.total_seconds())}


class Client:
    """The channel to the CA; with mTLS, one presenting the last certificate issued."""

    def __init__(self, pb_grpc, target, root, server_name):
        self.pb_grpc, self.target, self.root = pb_grpc, target, root
        self.options = [("grpc.ssl_target_name_override", server_name)]
        self.stub = self.channel(grpc.ssl_channel_credentials(root_certificates=root))
        self.last = None

    def channel(self, creds):
        channel = grpc.secure_channel(self.target, creds, options=self.options)
        return self.pb_grpc.IstioCertificateServiceStub(channel)

    def mtls(self):
        if self.last is None:
            sys.exit("mtls: no certificate issued yet")
        key, chain = self.last
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        creds = grpc.ssl_channel_credentials(root_certificates=self.root, private_key=pem,
                                             certificate_chain="".join(chain[:2]).encode())
        return self.channel(creds)


def create(pb, client, cmd):
    if cmd.get("key") == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    csr = cmd.get("csr")
    if csr is None:
        csr = request_pem(key, cmd.get("uris", []), cmd.get("dns", []), cmd.get("tamper", False))
    request = pb.IstioCertificateRequest(csr=csr, validity_duration=cmd.get("validity", 0))
    metadata = []
    if cmd.get("token") is not None:
        metadata.append(("authorization", "Bearer " + cmd["token"]))
    stub = client.mtls() if cmd.get("mtls") else client.stub
    try:
        response = stub.CreateCertificate(request, metadata=metadata, timeout=20)
    except grpc.RpcError as e:
        return {"ok": False, "code": e.code().name, "details": e.details()}
    client.last = (key, list(response.cert_chain))
    return issued(list(response.cert_chain), key)


def main():
    target, root_file = sys.argv[1], sys.argv[2]
    server_name = sys.argv[3] if len(sys.argv) > 3 else "istiod.istio-system.svc"
    pb, pb_grpc = stubs()
    with open(root_file, "rb") as f:
        client = Client(pb_grpc, target, f.read(), server_name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(create(pb, client, json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
