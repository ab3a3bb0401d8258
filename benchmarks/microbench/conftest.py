import torch

# One intra-op thread on CPU: these shapes are tiny, and on a shared 2-core machine a second
# thread turns every op into a barrier wait, so timings would measure the neighbours.
if not torch.cuda.is_available():
    torch.set_num_threads(1)
