"""Send a first request to the gateway with the standard Triton client, over gRPC or HTTP.

    python examples/client_tritonclient.py --url 127.0.0.1:8001 --protocol grpc
    python examples/client_tritonclient.py --url 127.0.0.1:8000 --protocol http

Needs `pip install 'tritonclient[http,grpc]' numpy` (the test extras have it).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default="cnn")
    args = parser.parse_args()

    if args.protocol == "grpc":
        import tritonclient.grpc as client
    else:
        import tritonclient.http as client  # type: ignore[no-redef]

    triton = client.InferenceServerClient(url=args.url)
    print("server ready:", triton.is_server_ready(), "| model ready:", triton.is_model_ready(args.model))
    metadata = triton.get_model_metadata(args.model)
    first = metadata.inputs[0] if args.protocol == "grpc" else metadata["inputs"][0]
    name, datatype = (
        (first.name, first.datatype) if args.protocol == "grpc" else (first["name"], first["datatype"])
    )
    shape = [1 if d == -1 else d for d in (first.shape if args.protocol == "grpc" else first["shape"])]

    rng = np.random.default_rng(0)
    if datatype == "INT32":
        data = rng.integers(0, 100, size=shape, dtype=np.int32)
    else:
        data = rng.random(size=shape, dtype=np.float32)
    tensor = client.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(data)  # binary tensor data on both protocols
    result = triton.infer(args.model, [tensor])
    response = result.get_response()
    outputs = response.outputs if args.protocol == "grpc" else response["outputs"]
    for output in outputs:
        out_name = output.name if args.protocol == "grpc" else output["name"]
        array = result.as_numpy(out_name)
        print(f"{out_name}: shape={array.shape} dtype={array.dtype} first values={array.ravel()[:5]}")


if __name__ == "__main__":
    main()
