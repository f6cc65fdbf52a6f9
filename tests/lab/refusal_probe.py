"""Run inside the lab's CPU host (`ip netns exec cpu-host python -m tests.lab.refusal_probe ...`):
call the runtime across the link three ways and print {case: "STATUS: details"} as JSON.

    no_client_cert   the CA, the token, but no client certificate (mTLS must refuse it)
    no_token         the loadgen's certificate, no bearer token (the interceptor must refuse it)
    full             certificate and token (must answer GetModelInfo)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc

from inloop.services.common.grpc_client import make_channel
from inloop.services.common.security import ClientSecurity
from inloop.v1 import runtime_pb2, runtime_pb2_grpc


def call(target: str, security: ClientSecurity) -> str:
    with make_channel(target, security) as channel:
        try:
            info = runtime_pb2_grpc.RuntimeStub(channel).GetModelInfo(runtime_pb2.GetModelInfoRequest(), timeout=10)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return f"OK: {info.name}"


def main(target: str, tls_dir: str, token_file: str) -> None:
    tls = Path(tls_dir)
    ca, cert, key = ((tls / name).read_bytes() for name in ("ca.crt", "loadgen.crt", "loadgen.key"))
    token = Path(token_file).read_text().strip()
    print(json.dumps({
        "no_client_cert": call(target, ClientSecurity(None, None, ca, token)),
        "no_token": call(target, ClientSecurity(cert, key, ca, None)),
        "full": call(target, ClientSecurity(cert, key, ca, token)),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
