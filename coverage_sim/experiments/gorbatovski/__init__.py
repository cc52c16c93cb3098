"""Gorbatovski et al. 2024 (arXiv:2404.09656), "Learn Your Reference Model for Real Good Alignment"
(TR-DPO): experiments with a reference that moves during training."""
