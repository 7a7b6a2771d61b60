"""`rnas study`: a declarative study read into a graph of steps (plan.py) and run, resumably (runner.py)."""
from rnas.study.plan import Step, Study, plan_study, read_study
from rnas.study.runner import StudyStopped, run_study, summary
from rnas.study.steps import is_complete

__all__ = ["Step", "Study", "StudyStopped", "is_complete", "plan_study", "read_study", "run_study", "summary"]
