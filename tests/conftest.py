"""Session-wide: leave the process without interpreter teardown once pytest has finished and reported.

After a full run (Ray instances, gym3/procgen and the SRWM kernel's threads in one process) the interpreter's
teardown has crashed with a segmentation fault after every test passed, which turned a green run red. The
exit status pytest computed is the result; it is returned directly once all output is flushed.
"""
import os
import sys


def pytest_sessionfinish(session, exitstatus):
    session.config._metarl_exit_status = int(exitstatus)


def pytest_unconfigure(config):
    status = getattr(config, "_metarl_exit_status", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
