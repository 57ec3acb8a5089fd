"""Reference models defined by hand (torchvision does not work with the pinned torch)."""
