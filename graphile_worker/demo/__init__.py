"""``graphile-worker demo``: graphile_worker at work on a real database, in seconds.

Without ``-c`` (or ``$DATABASE_URL``) the demo starts the embedded PostgreSQL
(``pip install 'graphile_worker[embedded]'``); with it, it uses that server. In
either case it drops and recreates its own database (``graphile_worker_demo``
unless ``--database`` names another), touching nothing else, and leaves it
behind to look at. There it migrates the schema and adds jobs of five tasks:

- ``send_welcome_email``: a Struct task, 200 jobs from one ``add_jobs`` call,
  plus one to a bouncing address with ``max_attempts=1`` that fails for good;
- ``greet_user``: an ``@task`` function fed by an ``AFTER INSERT`` trigger that
  calls ``graphile_worker.add_job`` for each row inserted into ``demo_users``;
- ``bank_transfer``: jobs in the named queue ``account-42``, which must run
  one at a time; each reads the balance, waits, then writes it back, so any
  overlap would lose money as well as show in the overlap count;
- ``flaky_report``: fails on its first attempt; the demo reschedules it to run
  at once (``reschedule_jobs``) rather than wait the e^1 s back-off;
- ``index_documents``: a batch task filled by several ``add_batch_job`` calls
  sharing a job key; one document fails once, and only it is retried.

A worker (``AsyncWorker``, or ``Worker`` with ``--threaded``) runs them while a
progress line shows counts per task; when no job is left to run the worker is
stopped and a summary is printed, with checks that everything added up. The
exit code is 0 when it did, 1 when it did not or something failed, 2 for a
usage error and 130 when interrupted.
"""

from __future__ import annotations

from graphile_worker.demo.command import main
from graphile_worker.demo.tasks import TASKS

__all__ = ["TASKS", "main"]
