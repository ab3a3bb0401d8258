"""The machine a result was measured on, for result folder names and report headers."""
import platform

import torch


def machine_name(device):
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return f"cpu-{platform.machine()}"
