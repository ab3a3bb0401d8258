"""Run by tests/test_tensor_parallel.py in processes of their own:

    torchrun --standalone --nproc-per-node 2 tests/tp_script.py torchrun DIR
        greedy tokens of PROMPTS with tensor_parallel_size 2, printed as JSON by rank 0
        (ranks > 0 serve inside the LLM constructor and never reach the print)
    python tests/tp_script.py orphan DIR
        starts a tensor-parallel engine, prints its worker's pid, then dies by SIGKILL
        without closing anything: the worker must exit by itself
"""
import json
import os
import signal
import sys

import torch

from engine import LLM, SamplingParams

PROMPTS = [[5, 6, 7], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [30]]
PARAMS = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=6)


def main(mode, path):
    torch.set_num_threads(1)
    if mode == "torchrun":
        with LLM(path, block_size=4, num_kv_blocks=32, tensor_parallel_size=2) as llm:
            print(json.dumps([o.token_ids for o in llm.generate(PROMPTS, PARAMS)]), flush=True)
    else:
        llm = LLM(path, block_size=4, num_kv_blocks=32, tensor_parallel_size=2)
        print(json.dumps(llm.engine.loaded.model.worker_pids), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(*sys.argv[1:])
