"""The irtrack service: settings, the app and its routes, the engine's API side, the workers and
the transport between them.

Imported before torch by the ``irtrack`` entry point, so this is where the OpenMP wait policy is
chosen: libgomp's default spin-waits between parallel regions, which on a CPU shared with the
API's event loop (and any other process) made each model call up to 10x slower; passive waiting
cost nothing measurable (``bench/service_e2e.py``). An explicit ``OMP_WAIT_POLICY`` wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
