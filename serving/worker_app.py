"""The entry point of one worker process of ``python -m serving --workers N`` (uvicorn imports
``serving.worker_app:create`` in each spawned worker; nothing else imports this module).

Like ``python -m serving`` (see ``serving/__main__.py``), a worker never needs torch: the guard below makes
``import torch`` fail before spaCy's thinc probes for it, so a worker does not map libtorch (~180 MB RSS and
~1.8 s of start-up each).  multiprocessing's spawn does not re-run ``serving/__main__.py`` in the children, so the
guard lives here, in the module the children import first.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("torch", None)

from serving.workers import create_worker_app  # noqa: E402 - after the torch guard

create = create_worker_app
