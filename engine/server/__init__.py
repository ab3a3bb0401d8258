"""An OpenAI-compatible HTTP server over the Engine (`python -m engine serve --model DIR`).

    protocol.py     request bodies (OpenAI's fields, vLLM's extras, mask-predict's fields)
    engine_loop.py  the one thread that owns the Engine and steps it for every client
    generation.py   one HTTP request's engine requests: add, read updates, abort on exit
    responses.py    OpenAI response objects and stream chunks from engine updates
    routes.py       the endpoints; state.py what they share; errors.py OpenAI's error shape
    metrics.py      Prometheus metrics; app.py the FastAPI app; cli.py the `serve` command

Importing this package does not import FastAPI; `engine.server.app.build_app` does.
"""
