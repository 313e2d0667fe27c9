"""gradlab: see how neural networks train, measured."""
