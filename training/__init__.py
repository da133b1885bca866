"""Training: data sets, losses, the training loop and its plots. Import the submodules you need."""
