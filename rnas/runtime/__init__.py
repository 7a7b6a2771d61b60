"""Where runs live and how they run: run directories, checkpoints and metrics (rundir.py), several processes
under torchrun (distributed.py), devices, AMP and compilation (device.py)."""
