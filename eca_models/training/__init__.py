"""Fine-tuning: resumable training state, the epoch sampler, the training step, the curves plot."""
