"""The RNAS-CL method itself: attention taps (taps.py), attention maps, the tutor module and the cross-layer
loss (distill.py, Eq. 1-3), how tutors are searched and derived (tutors.py, tutor_robust.py)."""
