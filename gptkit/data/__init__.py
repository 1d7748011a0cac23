"""Data: pretraining corpora and fine-tuning DataModules."""
