"""The real tritonclient (HTTP) against a Plinth deployment: health, metadata, config,
inference with binary tensors (the client's default) and with JSON, and statistics.

usage: python3 triton_roundtrip.py HOST:PORT MODEL API_KEY ROWS_JSON
Prints one JSON object with what the client got back.
"""
import json
import sys

import numpy as np
import tritonclient.http as http

url, model, key, rows = sys.argv[1:5]
auth = {"Authorization": f"Bearer {key}"}


def headers():
    # tritonclient adds its framing header to the dict it is given: a fresh one per call.
    return dict(auth)


client = http.InferenceServerClient(url=url)
assert client.is_server_live(headers=headers())
assert client.is_server_ready(headers=headers())
assert client.is_model_ready(model, headers=headers())
meta = client.get_model_metadata(model, headers=headers())
config = client.get_model_config(model, headers=headers())
server = client.get_server_metadata(headers=headers())

x = np.array(json.loads(rows), dtype=np.float32)
binary_input = http.InferInput("input", list(x.shape), "FP32")
binary_input.set_data_from_numpy(x)  # binary_data=True by default
binary = client.infer(model, [binary_input], headers=headers(), request_id="rt-1")

json_input = http.InferInput("input", list(x.shape), "FP32")
json_input.set_data_from_numpy(x, binary_data=False)
wanted = [http.InferRequestedOutput("probabilities", binary_data=False), http.InferRequestedOutput("label", binary_data=True)]
mixed = client.infer(model, [json_input], outputs=wanted, headers=headers())

stats = client.get_inference_statistics(model, headers=headers())
try:
    client.infer("no-such.model", [binary_input], headers=headers())
    missing = "no error"
except Exception as e:  # tritonclient raises InferenceServerException
    missing = str(e)

print(json.dumps({
    "server": server,
    "metadata": meta,
    "config": config,
    "binary": {"probabilities": binary.as_numpy("probabilities").tolist(), "label": binary.as_numpy("label").tolist(), "id": binary.get_response()["id"]},
    "mixed": {"probabilities": mixed.as_numpy("probabilities").tolist(), "label": mixed.as_numpy("label").tolist()},
    "stats": stats,
    "missing_model_error": missing,
}))
