"""What a trained net is worth and where it goes: `rnas eval` and ``load_model`` (evaluate.py) with its resumable
progress (eval_state.py), and `rnas export` to a file that runs without rnas (export.py)."""
