"""`podium demo`: the main job on the embedded default, end to end (see ``_run``)."""

from podium.demo._run import DemoError, DemoReport, default_data_dir, demo_apps, run_demo

__all__ = ["DemoError", "DemoReport", "default_data_dir", "demo_apps", "run_demo"]
