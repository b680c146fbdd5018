"""The scale runs' data and fit settings, shared by the bare process and the container runs."""

N_FEATURES = 64
N_CENTERS = 10
N_INIT = 4
SEED = 0
BATCH_SIZE = 4096  # the cluster step's --batch-size default
MINIBATCH_FROM = 100_000  # MiniBatchKMeans from this many samples
