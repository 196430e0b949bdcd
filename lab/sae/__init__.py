"""Sparse autoencoders on activations: Top-K or ReLU + L1, tied or untied, fast on a CPU.

    config.py   SAEConfig: size, sparsity and training of one SAE
    model.py    SparseAutoencoder (encode / decode / the sparse path), init_sae, pure losses
    kernels.py  the sparse and dense training steps' autograd functions (parity-tested)
    train.py    SAETrainer (one epoch at a time), train_sae, history_frame
    stats.py    latent_stats, class_counts, encode_rows, data_warning
    persist.py  save / load (safetensors + config.json), to_zip_bytes
    saelens.py  SAELens's folder format (read, check_fits, save_saelens); LoadedSAE
    load.py     the process's one SAE loader and cache: load_sae, fitting, units

The experiment that trains one on a text and scores its latents is lab.sae_text (with its
capture of one layer's activations over a text, lab.sae_text.capture).
"""
from lab.sae.config import SAEConfig
from lab.sae.model import SparseAutoencoder, SparseCode, dense_forward, init_sae, loss_terms
from lab.sae.persist import to_zip_bytes
from lab.sae.stats import class_counts, data_warning, encode_rows, latent_stats
from lab.sae.train import SAETrainer, history_frame, split_rows, train_sae

__all__ = ["SAEConfig", "SparseAutoencoder", "SparseCode", "dense_forward", "init_sae",
           "loss_terms", "to_zip_bytes", "class_counts", "data_warning",
           "encode_rows", "latent_stats",
           "SAETrainer", "history_frame", "split_rows", "train_sae"]
