"""Adversarial examples: the attack registry and attacks on [0, 1] inputs (attacks.py), and the adversarial
training objectives and Mixture BN (adversarial.py)."""
