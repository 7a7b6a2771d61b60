"""The training engine: the epoch loop shared by every command (loop.py), the optimizer (optim.py), the
training-cost meter (cost.py), the search (search.py), the Trainer library (trainer.py) and the two commands
built on it (retrain.py, teacher_train.py)."""
