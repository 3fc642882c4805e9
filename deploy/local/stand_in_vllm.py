"""`vllm serve MODEL --served-model-name=NAME --host=H --port=P ...` answered by the suite's stand-in model server.

The other options compose.yaml passes (LoRA, memory, lengths) mean nothing to it and are accepted as they are.
"""

import argparse

import uvicorn

from tests.utils.fake_vllm import FakeVLLM

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--served-model-name", default="base")
parser.add_argument("--host", default="0.0.0.0")
parser.add_argument("--port", type=int, default=8000)
options, _ = parser.parse_known_args()
stand_in = FakeVLLM("stand-in", base=options.served_model_name)
uvicorn.run(stand_in.app(), host=options.host, port=options.port, log_level="info")
