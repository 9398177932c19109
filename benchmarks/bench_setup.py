"""The device and batch the benchmarks run at."""
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = 128 if DEVICE.type == "cuda" else 32
