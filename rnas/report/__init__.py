"""`rnas report`: the runs collected (collect.py), their tables (tables.py), figures (figures.py, matplotlib) and
page (html.py); `rnas spaces` (spaces.py)."""
from rnas.report.collect import write_report

__all__ = ["write_report"]
