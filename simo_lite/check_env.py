"""``python -m simo_lite.check_env``: OK/FAIL per dependency with versions, the device, and directories."""
from __future__ import annotations

import importlib
import platform
import sys

REQUIRED = ["torch", "torchvision", "timm", "peft", "safetensors", "torchmetrics", "numpy", "matplotlib",
            "seaborn", "tqdm", "yaml", "ipywidgets", "ipykernel", "papermill", "nbformat"]
OPTIONAL = ["pytest", "nbval", "jupyterlab"]


def check(verbose: bool = True) -> bool:
    """Print one line per dependency, the device and the folders; True when nothing required fails."""
    ok = True
    print(f"python {platform.python_version()} ({sys.executable})")
    for name, required in [(n, True) for n in REQUIRED] + [(n, False) for n in OPTIONAL]:
        try:
            mod = importlib.import_module(name)
            status = f"OK    {name:14s} {getattr(mod, '__version__', '?')}"
        except Exception as e:  # ImportError, or a broken binary (e.g. torchvision ops)
            status = f"{'FAIL' if required else 'MISS'}  {name:14s} {type(e).__name__}: {str(e)[:80]}"
            ok = ok and not required
        print(status)
    try:
        import torch

        from . import __version__, paths
        from .profiles import resolve_device
        dev = resolve_device("auto")
        gpu = f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else ""
        print(f"OK    simo_lite      {__version__}")
        print(f"device: {dev}{gpu}; torch threads: {torch.get_num_threads()}")
        print(f"cache dir: {paths.cache_dir()}")
        print(f"run dir:   {paths.runs_root()}")
    except Exception as e:
        print(f"FAIL  simo_lite      {type(e).__name__}: {e}")
        ok = False
    print("environment OK" if ok else "environment has FAILures")
    return ok


if __name__ == "__main__":
    sys.exit(0 if check() else 1)
