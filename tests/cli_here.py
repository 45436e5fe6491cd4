"""`workbench ARGS` run in this test process: the console script's entry point (`workbench.cli.main`) with the
given argv, environment and folder, returning what `subprocess.run` would have. For error cases, which fail
before any work: a subprocess pays about 3 s for starting Python and importing torch, this pays nothing.
Cases that do real work, or must show the installed command's own start-up, still run as processes."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from pathlib import Path


def run_here(args: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None
             ) -> subprocess.CompletedProcess:
    """Run the CLI's entry point here. Must run in the main thread (the commands install signal handlers).
    Whatever it changes in this process (cwd, environment, argv, torch's thread count) is put back."""
    import torch

    from workbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = (dict(os.environ), sys.argv, os.getcwd(), torch.get_num_threads())
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    sys.argv = ["workbench", *args]
    if cwd is not None:
        os.chdir(cwd)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except BaseException:  # what the interpreter would print for an uncaught exception
                traceback.print_exc(file=err)
                code = 1
    finally:
        environ, sys.argv, folder, threads = saved
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(folder)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
