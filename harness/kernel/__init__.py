"""Kernel stage: source -> patched tree -> verified .config -> cached build."""
