"""`python -m engine serve --model DIR [--host 127.0.0.1] [--port 8000] [engine options]`.

The subcommand follows the command line's convention (engine/__main__.py): the engine flags
are the same as `generate`'s, declared by the `add_engine_arguments` it passes in and turned
into an EngineConfig by its `engine_config`; errors reach the user as main reports them.
"""
import gc
import os


def add_serve_command(commands, common, add_engine_arguments, engine_config) -> None:
    serve = commands.add_parser(
        "serve", parents=[common], help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve a local Hugging Face checkpoint over HTTP: /v1/completions, /v1/chat/completions "
                    "(when the tokenizer has a chat template), /v1/models, /health and /metrics. A masked LM "
                    "is served the same way; max_tokens is its length and the mask-predict parameters are "
                    "extra body fields.",
    )
    serve.set_defaults(run=lambda args: run_serve(args, engine_config(args)))
    add_engine_arguments(serve)
    http = serve.add_argument_group("server")
    http.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    http.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    http.add_argument("--served-model-name", metavar="NAME",
                      help="the model name clients send and /v1/models lists (default: the --model path)")
    http.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                      help="server log level (default: info)")
    http.add_argument("--disable-access-log", action="store_true", help="do not log every HTTP request")


def run_serve(args, config) -> int:
    """Load the model, then serve until interrupted (SIGINT / SIGTERM end it gracefully)."""
    # The tokenizer's parallel decode releases the GIL and must win it back from the event
    # loop's thread each step: 0.16 ms became 4.4 ms a batch next to a busy thread (2-core CPU).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import uvicorn

    from engine.engine import Engine
    from engine.server.app import build_app

    app = build_app(Engine(config), args.served_model_name or args.model)
    # What exists now (model, tokenizer, libraries) lives as long as the server: frozen, the
    # collector stops rescanning it, and a full collection no longer pauses a step for the
    # time it takes to walk every object loaded (~0.2 s measured beside the benchmark's heap).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=not args.disable_access_log, timeout_graceful_shutdown=10)
    return 0
