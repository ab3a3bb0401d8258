"""The FastAPI application that serves one Engine: `build_app(engine, model_name)`.

Its lifespan starts the engine loop's thread when the server starts and stops it at
shutdown; errors leave in OpenAI's JSON shape (errors.py).
"""
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engine.server.errors import install_handlers
from engine.server.routes import router
from engine.server.state import ServerState


def build_app(engine, model_name: str) -> FastAPI:
    """The application for `engine`, served under `model_name` (the `model` field clients send)."""
    state = ServerState.for_engine(engine, model_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loop.start()
        try:
            yield
        finally:
            state.loop.stop()

    app = FastAPI(title="duodecode", summary="OpenAI-compatible completions over duodecode's engine",
                  lifespan=lifespan)
    app.state.server = state
    install_handlers(app)
    app.include_router(router)
    return app
