"""The bi-encoder shared by training, retrieval and export."""
