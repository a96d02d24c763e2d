"""Export of a trained model as a sentence-transformers folder, its model card, MTEB evaluation of an export."""
