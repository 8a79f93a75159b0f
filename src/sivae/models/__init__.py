"""The user-facing models (SIVAE, VAE, LDVAE) on one base, their settings, saving and sampling."""
