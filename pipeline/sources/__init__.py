"""The data step: fetching and normalising datasets (BEIR, DPR), dev splits, reading a normalised dataset folder."""
