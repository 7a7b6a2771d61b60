"""One value per default. The library's objects (``Objective``, the loss functions, the attacks' training
helpers) and the CLI's flags read these names, so a default is changed in one place. Where a value was
chosen by measurement, the comment says where the measurement is."""

GAMMA_S = 1000.0  # Eq. 2 attention weight, 1/(n_s n_t) form: docs/experiments/cifar10-defaults.md
GAMMA_T = 1000.0  # Eq. 3 attention weight, 1/(n_s n_t) form: docs/experiments/cifar10-defaults.md
TUTOR_OBJECTIVE = "standardised"  # what moves the tutor logits: docs/experiments/cifar10-tutors.md
TUTOR_DERIVE = "balanced"  # how rnas derive turns them into tutors (argmax is the paper's): the same page
UNRECORDED_TUTOR_DERIVE = "argmax"  # the tutors of an arch.json written before it recorded tutor_derive
KL = "paper"  # the form of the logit KL: paper (the official code's) or hinton
KD_TEMPERATURE = 4.0  # temperature of the hinton KL
MAP_SIZE = 8  # side of the common attention-map size

EPS = 8 / 255  # l_inf budget of adversarial training and evaluation (pixel units)
STEP = 2 / 255  # PGD / TRADES inner step size
STEPS = 10  # PGD / TRADES inner steps
TRADES_BETA = 6.0  # Zhang et al.
NFGSM_NOISE = 2.0  # N-FGSM noise radius in units of eps (de Jorge et al.)

MAC_EXPONENT = 0.01  # the power n_f: docs/method.md "A search that trades accuracy for MACs"
FLOP_ALPHA = 0.2  # FBNetV2's FLOP factor alpha * log(MACs) ** beta
FLOP_BETA = 0.5
