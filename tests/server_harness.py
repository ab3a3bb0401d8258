"""Starting the server for tests on a free 127.0.0.1 port, bounded in time and always stopped:
`running_server` runs `python -m engine serve` as a subprocess (benchmarks/server_process.py);
`serving_in_process` runs an app under uvicorn in a thread of the test process (which lets a
test reach into its engine). Also the chat template the test tokenizers get.
"""
import contextlib
import os
import threading
import time

import uvicorn
from transformers import AutoTokenizer

from benchmarks.server_process import START_TIMEOUT_S, STOP_TIMEOUT_S, ServerProcess, free_port, port_is_closed

# each message's text, then "the" opening the answer, in the word-level test vocabulary
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}the{% endif %}"
)


def add_chat_template(path: str) -> str:
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


@contextlib.contextmanager
def running_server(model: str, *flags, log_dir: str):
    """A served model in a child process (one torch thread); yields the ServerProcess."""
    log_path = os.path.join(log_dir, f"server-{time.time_ns()}.log")
    with ServerProcess(model, flags, log_path, env=dict(os.environ, OMP_NUM_THREADS="1")) as server:
        yield server


@contextlib.contextmanager
def serving_in_process(app):
    """Serve `app` from a thread; yields the base URL. The thread is joined and the port
    closed when the block ends."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=STOP_TIMEOUT_S))
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S + 5)
    if thread.is_alive() or not port_is_closed(port):
        raise RuntimeError("the in-process server outlived its block")


@contextlib.contextmanager
def slowed_steps(engine, seconds: float):
    """Each engine step of an in-process server takes at least `seconds` more."""
    real_step = engine.step

    def step():
        time.sleep(seconds)
        return real_step()

    engine.step = step
    try:
        yield
    finally:
        del engine.step  # back to the class's method
