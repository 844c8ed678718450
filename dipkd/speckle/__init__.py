"""Speckle metrics (ENL, SSI, SMPI) for the paper's Figure 3."""
from .metrics import enl, fft_lowpass, smpi, ssi

__all__ = ["enl", "fft_lowpass", "smpi", "ssi"]
