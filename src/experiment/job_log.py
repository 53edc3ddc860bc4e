"""Hydra's job log files held off until a run (or a pretraining) is accepted."""

from __future__ import annotations

import logging


class HeldJobLog(logging.Handler):
    """Hydra's job log files, held off the root logger until the run is accepted.

    The set-up lines logged meanwhile (which baseline was loaded, a resume notice) are kept
    here and written to the files on ``release``, so a refused run writes nothing and an
    accepted one has its whole story in ``run.log``.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        root = logging.getLogger()
        self.files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        self.held: list[logging.LogRecord] = []
        for handler in self.files:
            root.removeHandler(handler)
        root.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record)

    def release(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        for handler in self.files:
            for record in self.held:
                if record.levelno >= handler.level:
                    handler.handle(record)
            root.addHandler(handler)
        self.held.clear()

    def drop(self) -> None:
        """A refused run: the held lines went to the console already; the files get none."""
        logging.getLogger().removeHandler(self)
        self.held.clear()
