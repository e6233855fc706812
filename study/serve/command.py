"""`study serve`: load a checkpoint once, warm its engine, and serve the live page and API with uvicorn.

Binds 127.0.0.1 unless told otherwise and refuses a non-loopback address without a token; it never
changes the checkpoint after start-up.
"""

import threading
import time
from contextlib import contextmanager
from pathlib import Path

from study.command_args import parse_key_values
from study.errors import StudyError
from study.serve.settings import ServeSettings

EXAMPLE = "study serve checkpoint=runs/<run>/checkpoints/best.pt"
USAGE = f"""usage: study serve checkpoint=PATH|study:NAME [key=value ...]
  {EXAMPLE}
  study serve checkpoint=study:replicate port=8080 max_streams=8
  study serve checkpoint=... host=0.0.0.0 token=SECRET      (other machines: clients send the token)
keys: """ + ", ".join(ServeSettings.__dataclass_fields__)


def resolve_checkpoint(value: str, runs: str) -> Path:
    """A checkpoint path, or study:NAME -> the best finished trial's best.pt of that study."""
    if value.startswith("study:"):
        from study.studies import best_checkpoint
        return best_checkpoint(Path(runs), value.removeprefix("study:"))
    path = Path(value).expanduser()
    if not path.is_file():
        raise StudyError(f"checkpoint={value} is not a file; pass a best.pt written by `study train`, or "
                         "checkpoint=study:NAME for the best trial of a study")
    return path


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    import uvicorn

    from study.serve.app import create_app
    from study.serve.service import Service
    settings = parse_key_values(ServeSettings, argv, "serve", EXAMPLE)
    service = Service(settings, resolve_checkpoint(settings.checkpoint, settings.runs))
    try:
        warm = service.warm()
        print(f"study serve: {service.generator.checkpoint} ({service.describe()}); engine warm in {warm:.1f} s; "
              f"{settings.max_streams} streams of {service.scheduler.chunk} samples per step", flush=True)
        config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port, log_level="warning",
                                ws_max_size=1 << 16)
        shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host

        class AnnouncingServer(uvicorn.Server):
            async def startup(self, sockets=None):
                await super().startup(sockets)
                if self.started:
                    url = f"http://{shown_host}:{settings.port}/"
                    print(f"listening on {url}  (API: {url}docs; Ctrl-C stops)", flush=True)

        server = AnnouncingServer(config)
        server.run()
    finally:
        service.close()
    return 0


@contextmanager
def background_server(service, host: str = "127.0.0.1"):
    """The app on a free port of `host`, served by uvicorn on a thread; yields its base URL."""
    import socket

    import uvicorn

    from study.serve.app import create_app
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=port, log_level="warning",
                                           ws_max_size=1 << 16))
    thread = threading.Thread(target=server.run, name="study-serve-http", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server did not start on {host}:{port}")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
