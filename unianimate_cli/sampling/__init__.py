"""Noise schedule, DDIM sampling, guidance and long-video windowing (no UNet inside)."""
