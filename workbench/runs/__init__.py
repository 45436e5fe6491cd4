"""Run folders: layout, status, metrics stream, listing and process control."""

from .control import delete_run, launch_detached, launch_profile, request_stop, resume_detached, stop_run
from .files import MetricsWriter, RunPaths, read_json, read_metrics, truncate_metrics, write_json_atomic, write_text_atomic
from .layout import DEFAULT_RUNS_DIR, UNREADABLE, RunSummary, list_runs, new_run_dir, open_run, summarize
from .status import Status, effective_state, pid_alive

__all__ = [
    "DEFAULT_RUNS_DIR", "delete_run", "effective_state", "launch_detached", "launch_profile", "list_runs",
    "MetricsWriter", "new_run_dir", "open_run", "pid_alive", "read_json", "read_metrics", "request_stop",
    "resume_detached", "RunPaths", "RunSummary", "Status", "stop_run", "summarize", "truncate_metrics",
    "UNREADABLE", "write_json_atomic", "write_text_atomic",
]
