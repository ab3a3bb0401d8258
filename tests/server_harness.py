"""Starting the server for tests on a free 127.0.0.1 port, bounded in time and always stopped:
`running_server` runs `python -m engine serve` as a subprocess (ready when /health answers;
SIGTERM, then SIGKILL); `serving_in_process` runs an app under uvicorn in a thread of the
test process (which lets a test reach into its engine).

Also the chat template the test tokenizers get, and tiny checkpoints that carry it.
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import threading

import httpx
import uvicorn
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20

# "user : the cat . assistant :" in the word-level test vocabulary
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}the{% endif %}"
)


def add_chat_template(path: str) -> str:
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class ServerProcess:
    def __init__(self, model: str, flags, log_path: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, OMP_NUM_THREADS="1")
        command = [sys.executable, "-m", "engine", "serve", "--model", model, "--port", str(self.port),
                   "--disable-access-log", "--log-level", "warning", *flags]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server did not answer /health within {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)

    def is_gone(self) -> bool:
        return self.process.poll() is not None and port_is_closed(self.port)


@contextlib.contextmanager
def running_server(model: str, *flags, log_dir: str):
    """A served model; yields the ServerProcess (its .url is the base URL)."""
    server = ServerProcess(model, flags, os.path.join(log_dir, f"server-{os.getpid()}-{time.time_ns()}.log"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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
